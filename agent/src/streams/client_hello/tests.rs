use super::*;

/// The ClientHello of Python 3.11's `ssl` (OpenSSL 3.0) to `shop.example` with ALPN `h2`,
/// `http/1.1`, taken from a memory BIO.
const PYTHON_HELLO: &str = "1603010200010001fc0303e3a536e928466f0fff618721cf5f2b7fe87792995bf5306db6e35ca712b6f611200e3685662af6c140eff67829219eef9af1fe454b85b4ee4452ffea0a20f53e480024130213031301c02cc030c02bc02fcca9cca8c024c028c023c027009f009e006b006700ff0100018f00000011000f00000c73686f702e6578616d706c65000b000403000102000a00160014001d0017001e0019001801000101010201030104002300000010000e000c02683208687474702f312e310016000000170000000d002a0028040305030603080708080809080a080b080408050806040105010601030303010302040205020602002b00050403040303002d00020101003300260024001d0020c0f1c87cd78dbbd40b4a776669e32bef70415b279559db6f5e5ccdf8406dff65001500cf000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

/// Its JA4, computed from the raw bytes by an independent script (not through `tls-parser`).
const PYTHON_JA4: &str = "t13d1812h2_85036bcba153_d41ae481755e";

fn python_hello() -> Vec<u8> {
    (0..PYTHON_HELLO.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&PYTHON_HELLO[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn a_real_client_hello_gives_the_reference_fingerprint() {
    assert_eq!(ja4(&python_hello()).as_deref(), Some(PYTHON_JA4));
}

#[test]
fn the_cipher_hash_matches_the_specification_example() {
    // FoxIO's JA4 technical details: Chrome's sorted cipher list hashes to 8daaf6152771.
    let ciphers = [
        0x002f, 0x0035, 0x009c, 0x009d, 0x1301, 0x1302, 0x1303, 0xc013, 0xc014, 0xc02b, 0xc02c,
        0xc02f, 0xc030, 0xcca8, 0xcca9,
    ];
    assert_eq!(truncated_hash(&hex_list(&ciphers)), "8daaf6152771");
}

#[test]
fn a_hello_read_as_header_then_body_is_assembled() {
    let hello = python_hello();
    let mut assembly = ClientHelloAssembly::default();
    assert_eq!(
        assembly.add(0, &hello[..5]),
        Some(HelloProgress::Incomplete)
    );
    assert_eq!(
        assembly.add(5, &hello[5..]),
        Some(HelloProgress::Fingerprint(PYTHON_JA4.to_owned()))
    );
    assert_eq!(assembly.add(hello.len() as u64, b"later"), None);
}

#[test]
fn a_lost_piece_or_a_server_hello_gives_nothing() {
    let hello = python_hello();
    let mut gapped = ClientHelloAssembly::default();
    assert_eq!(gapped.add(0, &hello[..5]), Some(HelloProgress::Incomplete));
    assert_eq!(gapped.add(40, &hello[40..]), Some(HelloProgress::Unusable));

    let mut server_hello = hello.clone();
    server_hello[5] = 0x02;
    assert_eq!(ja4(&server_hello), None);
}

#[test]
fn alpn_values_that_are_not_alphanumeric_are_shown_as_hex() {
    assert_eq!(alpn_code(Some(b"h2")), "h2");
    assert_eq!(alpn_code(Some(b"http/1.1")), "h1");
    assert_eq!(alpn_code(Some(&[0xab, 0x01])), "a1");
    assert_eq!(alpn_code(None), "00");
    assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a1a));
}

#[test]
fn every_truncation_of_a_hello_is_handled_without_panicking() {
    let hello = python_hello();
    for end in 0..hello.len() {
        assert_eq!(ja4(&hello[..end]), None, "truncated at {end}");
        let mut assembly = ClientHelloAssembly::default();
        assert_eq!(
            assembly.add(0, &hello[..end]),
            Some(HelloProgress::Incomplete)
        );
    }
}
