//! One sending client: writes numbered, timestamped messages, open loop at a
//! fixed rate, closed loop under a window, or both.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// How late an open-loop sender may wake, from the timer's resolution
/// alone, before the lateness counts against the server.
const TIMER_SLACK_NS: u64 = 2_000_000;

use super::conn::Writer;
use super::irc;
use super::shared::{Shared, Timeline};
use super::token::Token;

/// Most bytes written per batch; a batch is one `write_all`.
const BATCH_BYTES: usize = 64 * 1024;
/// Most messages per batch.
const BATCH_MESSAGES: usize = 256;

pub(crate) struct SendTask {
    pub(crate) idx: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) writer: Writer,
    pub(crate) timeline: Timeline,
    /// Messages per second for this sender, or `None` for as fast as the
    /// window allows.
    pub(crate) rate: Option<f64>,
    /// A write still blocked then is abandoned.
    pub(crate) hard_deadline: Instant,
}

impl SendTask {
    /// Sends until the end of the timeline, then returns the write half, so
    /// that the connection stays open until the receivers are done.
    pub(crate) async fn run(self) -> (usize, Writer) {
        let SendTask {
            idx,
            shared,
            mut writer,
            timeline: tl,
            rate,
            hard_deadline,
        } = self;
        let st = &shared.per_sender[idx];
        let end = Instant::from_std(shared.instant(tl.end_ns));
        let size = shared.size;
        let window = shared.window as u64;
        let batch_max = (BATCH_BYTES / (size + 1)).clamp(1, BATCH_MESSAGES);
        // Open loop: message i of this sender is due at
        // start + (i * senders + idx) / total_rate, which spreads the
        // senders evenly over each interval.
        let total_rate = rate.map(|r| r * shared.senders as f64);
        let due_ns = |i: u64| -> u64 {
            let r = total_rate.unwrap_or(f64::INFINITY);
            let offset = (i as f64 * shared.senders as f64 + idx as f64) * 1e9 / r;
            tl.start_ns.saturating_add(offset as u64)
        };
        let prefix: &[u8] = if shared.irc { irc::PRIVMSG } else { b"" };
        let mut buf = Vec::with_capacity(batch_max * (prefix.len() + size + 1));
        let mut seq: u64 = 0;
        loop {
            let mut n = batch_max as u64;
            if window > 0 {
                let in_flight = seq - st.completed.load(Ordering::Acquire);
                if in_flight >= window {
                    tokio::select! {
                        _ = st.room.notified() => continue,
                        _ = tokio::time::sleep_until(end) => break,
                    }
                }
                n = n.min(window - in_flight);
            }
            let now_ns = shared.now_ns();
            if now_ns >= tl.end_ns {
                break;
            }
            if rate.is_some() {
                let next = due_ns(seq);
                if next >= tl.end_ns {
                    break;
                }
                if next > now_ns {
                    tokio::time::sleep_until(Instant::from_std(shared.instant(next))).await;
                    continue;
                }
                // Catch up on everything already due (bursting if behind).
                let mut due = 1;
                while due < n && due_ns(seq + due) <= now_ns {
                    due += 1;
                }
                n = due;
            }
            buf.clear();
            let mut measured = 0;
            for i in seq..seq + n {
                // Open loop stamps the scheduled time, so a sender that falls
                // behind shows up as latency (no coordinated omission). But
                // the timer wakes a sender up to about a millisecond late
                // (tokio's resolution); lateness within `TIMER_SLACK_NS` is
                // the bench's own, so such a message is stamped when it is
                // actually sent.
                let sent_ns = match rate {
                    None => now_ns,
                    Some(_) if now_ns.saturating_sub(due_ns(i)) <= TIMER_SLACK_NS => now_ns,
                    Some(_) => due_ns(i),
                };
                if tl.measured(sent_ns) {
                    measured += 1;
                }
                st.arm(i);
                buf.extend_from_slice(prefix);
                Token {
                    sender: idx as u64,
                    seq: i,
                    sent_ns,
                }
                .write_line(&mut buf, size);
            }
            // Receivers accept a sequence number only once it is issued, and
            // the window slots are armed before that.
            st.issued.store(seq + n, Ordering::Release);
            // The flush matters over TLS only: it pushes out a record that
            // the TLS layer may still hold.
            let write = async {
                writer.write_all(&buf).await?;
                writer.flush().await
            };
            match tokio::time::timeout_at(hard_deadline, write).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    st.failed.store(true, Ordering::Relaxed);
                    break;
                }
                Err(_) => break,
            }
            seq += n;
            st.written.fetch_add(n, Ordering::Release);
            st.window_sent.fetch_add(measured, Ordering::Relaxed);
        }
        (idx, writer)
    }
}
