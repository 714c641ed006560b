//! The hub's fan-out path (`rchat::server::hub`): one member of a room of
//! N says a line, and the hub sequences it and queues it in every other
//! member's outbox. Measured alone (`say`), and with the writers' side
//! too (`say_drain`: every outbox drained and the line rendered in the
//! text format, as a connection's writer does before its socket write).
//! Outboxes are drained after every line either way, so none overflows.
//!
//! `cargo bench --bench fanout`

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::FutureExt;
use rchat::event::Format;
use rchat::server::hub::{Hub, HubLimits, MemberId};
use rchat::server::outbox::{Outbox, Outgoing, Queued};
use std::hint::black_box;

/// The server's default send-queue limit.
const SENDQ: usize = 1 << 20;
const LINE: &str = "a chat line of an ordinary length, say about sixty-four bytes";

struct Room {
    hub: Hub,
    speaker: MemberId,
    outboxes: Vec<Arc<Outbox>>,
    batch: VecDeque<Queued>,
}

impl Room {
    fn new(members: usize) -> Room {
        let hub = Hub::new(HubLimits::default());
        let mut outboxes = Vec::with_capacity(members);
        let mut speaker = None;
        for _ in 0..members {
            let outbox = Outbox::new(SENDQ);
            let (id, _) = hub
                .connect(outbox.clone(), |_| Outgoing::Raw("hi\n".into()))
                .expect("connect");
            hub.join(id, "lobby", |_| Outgoing::Raw("joined\n".into()))
                .expect("join");
            speaker.get_or_insert(id);
            outboxes.push(outbox);
        }
        let mut room = Room {
            hub,
            speaker: speaker.expect("at least one member"),
            outboxes,
            batch: VecDeque::new(),
        };
        room.drain(false);
        room
    }

    /// Empties every outbox, rendering each item if `render`, and frees its
    /// cost, as the connection writers would.
    fn drain(&mut self, render: bool) {
        for outbox in &self.outboxes {
            // Never waits: it returns at once whether or not anything is
            // queued (an empty outbox would wait, so poll only once).
            if outbox
                .take(&mut self.batch, &mut 0)
                .now_or_never()
                .is_none()
            {
                continue;
            }
            let mut cost = 0;
            for item in self.batch.drain(..) {
                cost += item.cost();
                if render {
                    black_box(item.wire(Format::Text, rchat::proto::text::render));
                }
            }
            outbox.release(cost);
        }
    }

    fn say(&self) {
        let posted = self
            .hub
            .say(self.speaker, "lobby", LINE, false)
            .expect("say");
        black_box(posted);
    }
}

fn say(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout/say");
    for members in [10, 100, 1000] {
        let mut room = Room::new(members);
        group.throughput(Throughput::Elements(members as u64 - 1));
        group.bench_function(BenchmarkId::from_parameter(members), |b| {
            // Only the say is timed; draining happens between lines.
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let began = Instant::now();
                    room.say();
                    spent += began.elapsed();
                    room.drain(false);
                }
                spent
            })
        });
    }
    group.finish();
}

fn say_drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout/say_drain");
    for members in [10, 100, 1000] {
        let mut room = Room::new(members);
        group.throughput(Throughput::Elements(members as u64 - 1));
        group.bench_function(BenchmarkId::from_parameter(members), |b| {
            b.iter(|| {
                room.say();
                room.drain(true);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, say, say_drain);
criterion_main!(benches);
