//! The JSON protocol's decoders under arbitrary bytes: no panic, whatever
//! decodes encodes to one line that decodes to the same message, and a
//! client message becomes a request without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rchat::proto::json::{decode_client, decode_server, encode, into_request, is_hello};

fuzz_target!(|line: &[u8]| {
    let _ = is_hello(line);
    if let Ok(msg) = decode_client(line) {
        let bytes = encode(&msg);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(decode_client(&bytes[..bytes.len() - 1]).ok(), Some(msg.clone()));
        // The request it becomes: names made safe and bounded.
        if let Some((_, request)) = into_request(msg) {
            let _ = request.name();
        }
    }
    if let Ok(msg) = decode_server(line) {
        let bytes = encode(&msg);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(decode_server(&bytes[..bytes.len() - 1]).ok(), Some(msg));
    }
});
