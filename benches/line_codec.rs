//! The text protocol's line framing (`rchat::proto::line::LineCodec`):
//! decoding a buffer of many lines, for a few line lengths, both when the
//! whole buffer is there at once and when it arrives in read-sized chunks
//! (the partial line at the end of each chunk is what costs extra).
//!
//! `cargo bench --bench line_codec`

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rchat::proto::line::{Frame, LineCodec};
use std::hint::black_box;
use tokio_util::codec::Decoder;

/// The server's default `--max-line`.
const MAX_LINE: usize = 1024;
/// Bytes of input per benchmark iteration.
const INPUT_BYTES: usize = 256 * 1024;

/// Lines of `len` bytes (plus `\n`) filling about [`INPUT_BYTES`].
fn input(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(INPUT_BYTES + len + 1);
    let mut i = 0u8;
    while out.len() < INPUT_BYTES {
        out.extend((0..len).map(|k| b'a' + (i.wrapping_add(k as u8) % 26)));
        out.push(b'\n');
        i = i.wrapping_add(1);
    }
    out
}

/// Feeds `data` in `chunk`-byte reads, decoding every complete line after
/// each; returns the number of lines.
fn decode_chunked(data: &[u8], chunk: usize) -> usize {
    let mut codec = LineCodec::new(MAX_LINE);
    let mut buf = BytesMut::with_capacity(chunk + MAX_LINE + 2);
    let mut lines = 0;
    for piece in data.chunks(chunk) {
        buf.put_slice(piece);
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            if let Frame::Line(line) = frame {
                black_box(line);
                lines += 1;
            }
        }
    }
    lines
}

fn whole_buffer(c: &mut Criterion) {
    let mut group = c.benchmark_group("line_codec/whole");
    for len in [16, 128, 1000] {
        let data = input(len);
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &data, |b, data| {
            b.iter(|| decode_chunked(black_box(data), data.len()))
        });
    }
    group.finish();
}

fn chunked(c: &mut Criterion) {
    let mut group = c.benchmark_group("line_codec/chunked");
    let data = input(128);
    group.throughput(Throughput::Bytes(data.len() as u64));
    // A small read, a typical packet, and the server's read buffer.
    for chunk in [64, 1500, 8192] {
        group.bench_with_input(BenchmarkId::from_parameter(chunk), &chunk, |b, &chunk| {
            b.iter(|| decode_chunked(black_box(&data), chunk))
        });
    }
    group.finish();
}

criterion_group!(benches, whole_buffer, chunked);
criterion_main!(benches);
