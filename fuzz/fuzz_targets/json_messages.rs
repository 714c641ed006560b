//! The JSON protocol's decoders under arbitrary bytes: no panic, and
//! whatever decodes encodes to one line that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rchat::proto::json::{decode_client, decode_server, encode, is_hello};

fuzz_target!(|line: &[u8]| {
    let _ = is_hello(line);
    if let Ok(msg) = decode_client(line) {
        let bytes = encode(&msg);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(decode_client(&bytes[..bytes.len() - 1]).ok(), Some(msg));
    }
    if let Ok(msg) = decode_server(line) {
        let bytes = encode(&msg);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(decode_server(&bytes[..bytes.len() - 1]).ok(), Some(msg));
    }
});
