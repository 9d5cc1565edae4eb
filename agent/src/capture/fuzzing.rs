//! The fuzz harness of capture's own parsers of bytes from other programs' files (listed in
//! `crate::fuzzing`).

/// Go's function table (`.gopclntab`), build information and machine code, as read from an
/// executable the agent does not control.
pub fn go_binary_tables(data: &[u8]) {
    super::tls::fuzz_go_tables(data);
}
