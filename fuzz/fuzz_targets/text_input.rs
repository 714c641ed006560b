//! A text-protocol line as the server treats it: decoded lossily,
//! sanitised, parsed. Sanitising leaves no control character but TAB and is
//! idempotent; parsing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rchat::proto::{sanitize, text};

fuzz_target!(|line: &[u8]| {
    let decoded = String::from_utf8_lossy(line);
    let clean = sanitize::clean(&decoded);
    // TAB is kept on purpose; every other control character goes.
    assert!(
        !clean.chars().any(|c| c.is_control() && c != '\t'),
        "{clean:?}"
    );
    assert_eq!(sanitize::clean(&clean), clean);
    let _ = text::parse(&clean);
});
