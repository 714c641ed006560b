//! The line framer under arbitrary bytes, arriving in arbitrary chunks:
//! it never panics, never yields a line over the limit or one holding a
//! newline, never buffers much past the limit, and frames the same stream
//! the same way however it is chunked.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rchat::proto::line::{Frame, LineCodec};
use tokio_util::codec::Decoder;

fn frames(data: &[u8], max_line: usize, chunk: usize) -> Vec<Frame> {
    let mut codec = LineCodec::new(max_line);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(frame) = codec.decode(&mut buf).expect("decoding never fails") {
            out.push(frame);
        }
        assert!(
            buf.len() <= max_line + 2,
            "{} bytes buffered with a limit of {max_line}",
            buf.len()
        );
    }
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decoding never fails") {
        out.push(frame);
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&[limit, chunk], data)) = input.split_first_chunk::<2>() else {
        return;
    };
    let max_line = 1 + limit as usize % 64;
    let chunk = 1 + chunk as usize % 17;
    let chunked = frames(data, max_line, chunk);
    for frame in &chunked {
        if let Frame::Line(line) = frame {
            assert!(line.len() <= max_line);
            assert!(!line.contains(&b'\n'));
        }
    }
    assert_eq!(chunked, frames(data, max_line, data.len().max(1)));
});
