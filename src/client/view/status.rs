//! The connection's status as the view shows it: connected, lost and when
//! the next attempt is, ended for good; and what a lost connection does to
//! requests in flight.

use super::*;

impl ChatView {
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Seconds until the next reconnect attempt, if one is scheduled.
    pub fn retry_in_secs(&self) -> Option<u64> {
        match &self.status {
            Status::Lost {
                retry_in: Some(d), ..
            } => {
                let elapsed = self.now().saturating_sub(self.status_at);
                let left = (d.as_millis() as u64).saturating_sub(elapsed);
                Some(left.div_ceil(1000))
            }
            _ => None,
        }
    }

    /// Whether the connection has ended for good.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Records that the connection task has ended (its update channel
    /// closed): nothing more will arrive.
    pub fn set_ended(&mut self) {
        if !self.ended {
            self.ended = true;
            self.push_local(
                Kind::Error,
                "the connection has ended; press any key to exit",
            );
        }
    }

    pub(super) fn apply_status(&mut self, status: Status) {
        let was_connected = matches!(self.status, Status::Connected { .. });
        match &status {
            Status::Connected { server, tls } => {
                self.server = clean(server);
                self.tls = *tls;
                self.push_local(Kind::Info, &format!("connected to {}", self.server.clone()));
            }
            Status::Lost { reason, retry_in } => {
                if was_connected {
                    self.lost_in_flight();
                }
                // Failed attempts while reconnecting only update the status
                // bar; a lost session, or giving up, gets a line.
                if was_connected || retry_in.is_none() {
                    let mut text = format!("connection lost: {reason}");
                    if let Some(d) = retry_in {
                        text.push_str(&format!(
                            "; reconnecting in {}s",
                            (d.as_millis() as u64).div_ceil(1000)
                        ));
                    }
                    self.push_local(Kind::Error, &text);
                }
            }
            Status::Connecting { .. } => {}
        }
        self.status = match status {
            Status::Connected { server, tls } => Status::Connected {
                server: clean(&server),
                tls,
            },
            Status::Lost { reason, retry_in } => Status::Lost {
                reason: clean(&reason),
                retry_in,
            },
            s => s,
        };
        self.status_at = self.now();
    }

    /// The connection was lost: pages asked for will not be answered, and
    /// my messages still waiting for an ack may or may not have been
    /// posted (the replay after reconnecting will tell).
    pub(super) fn lost_in_flight(&mut self) {
        for room in &mut self.rooms {
            room.history.loading = None;
        }
        for line in &mut self.lines {
            if line.room.is_some()
                && line.seq.is_none()
                && matches!(
                    line.kind,
                    Kind::Own {
                        delivery: Delivery::Pending,
                        ..
                    }
                )
            {
                line.in_doubt = true;
            }
        }
    }
}
