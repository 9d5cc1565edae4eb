//! The return instructions of a function, where its return is probed (Go's movable stacks rule
//! out uretprobes), found by decoding its machine code (amd64).

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// The addresses of the `RET` instructions in `code`, the machine code of a function that
/// starts at `address`. Decoding is linear: Go puts no data between a function's instructions.
pub fn return_addresses(code: &[u8], address: u64) -> Vec<u64> {
    Decoder::with_ip(64, code, address, DecoderOptions::NONE)
        .into_iter()
        .filter(|instruction| instruction.mnemonic() == Mnemonic::Ret)
        .map(|instruction| instruction.ip())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ret_is_found_and_bytes_inside_instructions_are_not() {
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, // endbr64
            0x48, 0xc7, 0xc0, 0xc3, 0x00, 0x00, 0x00, // mov rax, 0xc3: a 0xc3 byte, no RET
            0xc3, // ret
            0x31, 0xc0, // xor eax, eax
            0xc3, // ret
            0xcc, 0xcc, // int3 padding
        ];
        assert_eq!(return_addresses(&code, 0x1000), [0x100b, 0x100e]);
    }

    #[test]
    fn undecodable_bytes_end_nothing_badly() {
        assert!(return_addresses(&[0x0f, 0xff, 0x48], 0).is_empty());
        assert!(return_addresses(&[], 0).is_empty());
    }
}
