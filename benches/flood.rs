//! Flood control's per-line check (`rchat::server::flood::Flood::check`):
//! what every line costs when the bucket has tokens (the everyday case), and
//! when it is empty and lines are refused. With `--flood-rate 0` a session
//! holds no bucket and skips the check entirely.
//!
//! `cargo bench --bench flood`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rchat::config::ServerConfig;
use rchat::server::flood::{Flood, Verdict};
use tokio::time::Instant;

fn bucket(rate: u32, burst: u32) -> Flood {
    let config = ServerConfig {
        flood_rate: rate,
        flood_burst: burst,
        flood_kick_refusals: 0,
        ..ServerConfig::default()
    };
    Flood::from_config(&config, Instant::now()).expect("flood control on")
}

fn check(c: &mut Criterion) {
    let mut group = c.benchmark_group("flood_check");
    // Time advances 1 ms a line at 1000 lines/s allowed: always a token.
    group.bench_function("pass", |b| {
        let mut flood = bucket(1000, 20);
        let mut now = Instant::now();
        b.iter(|| {
            now += Duration::from_millis(1);
            let v = flood.check(black_box(now));
            debug_assert_eq!(v, Verdict::Pass);
            black_box(v)
        })
    });
    // The clock stands still: every line after the burst is refused.
    group.bench_function("refuse", |b| {
        let mut flood = bucket(5, 20);
        let now = Instant::now();
        b.iter(|| black_box(flood.check(black_box(now))))
    });
    // What a session pays to read the clock once per read with flood
    // control on.
    group.bench_function("clock", |b| b.iter(|| black_box(Instant::now())));
    group.finish();
}

criterion_group!(benches, check);
criterion_main!(benches);
