//! The full-screen terminal interface of `rchat connect`, on ratatui and
//! crossterm.
//!
//! ```text
//! 12:34 <bob> hello                                       │lobby (2)
//! 12:35 <alice> hi bob, this is a longer line that wraps  │alice
//!               under its text                            │bob
//!  connected │ host:1234 TLS on │ alice │ [lobby] dev(3)          ← status
//! [lobby] what is being typed                                     ← input
//! ```
//!
//! The message pane shows the current room's lines plus private messages,
//! notices and errors, word-wrapped by display width (CJK and emoji take two
//! columns). The status bar shows the connection state (with the reconnect
//! countdown), server, TLS on/off, nick, the rooms (unread counts for the
//! others, `!` after a mention; abbreviated on a narrow screen, never
//! without the current room) and, after a loss, its reason. Timestamps
//! follow the client's config (local `HH:MM` by default), with the date for
//! stored history from another day. Where the held history of the room
//! begins, a mark says whether older messages are loading, can be loaded by
//! scrolling up, or whether this is the beginning of history; a red rule
//! marks where I last left the room. A line naming me is highlighted and
//! rings the bell once.
//!
//! The screen is redrawn from the [`ChatView`] after every event, so
//! incoming messages never disturb what is being typed. [`draw`] is pure
//! (a [`Frame`] in, nothing else touched) and the key handling lives in
//! [`App`], so both are tested without a terminal.
//!
//! Keys: Enter sends; Tab and Shift-Tab complete (nicks, commands, rooms:
//! `complete`); Left/Right (Ctrl-B/F), Home/End (Ctrl-A/E), Ctrl-Left/Right
//! (Alt-B/F) by word, Backspace/Delete, Ctrl-U/K delete to start/end,
//! Ctrl-W (Alt-Backspace) deletes the word before the cursor; Up/Down walk
//! the input history; PgUp/PgDn and the mouse wheel scroll; Alt-1..9 go to
//! a room, Alt-Left/Right and Ctrl-P/Ctrl-N to the previous/next one (as
//! does `/join ROOM` for a room already joined); Ctrl-L redraws; Ctrl-C,
//! Ctrl-D on an empty line, and `/quit` send the quit and leave. `/ignore`
//! and `/unignore` stay in the client. Pasted text is inserted with its
//! line breaks turned into spaces. Mouse capture is on for the wheel, so
//! most terminals select text with Shift held.
//!
//! When the connection ends for good (the update channel closes, e.g. with
//! reconnecting off), the status bar says so and the next key press exits.
//! SIGTERM and SIGHUP leave as `/quit` does.
//!
//! The terminal is always restored (raw mode off, alternate screen left,
//! mouse capture and bracketed paste off, cursor shown): by a guard on
//! return or error, and by a panic hook that restores it before the
//! previous hook prints the panic.
//!
//! This file owns the entry point [`run`] and the event loop that ties
//! terminal events, connection updates and redraws together; it draws
//! nothing and interprets no keys itself. The rest is split by job:
//! `input` (the line being typed), `complete` (Tab completion), `width`
//! (text as shown), `style`
//! (colours and line styles), `wrap` (word-wrapping), `render` (drawing
//! the screen), `app` (state and keys) and `terminal` (raw mode and its
//! restoring).
//!
//! [`Frame`]: ratatui::Frame

mod app;
mod complete;
mod input;
mod render;
mod style;
mod terminal;
#[cfg(test)]
mod test_util;
mod width;
mod wrap;

pub use app::{App, Effect, Options};
pub use input::InputLine;
pub use render::{draw, Drawn};
pub use style::{hhmm, nick_colour};
pub use width::display;

use std::future::Future;
use std::io;
use std::time::Duration;

use futures::{Stream, StreamExt};
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::crossterm::event::{Event, EventStream};
use ratatui::Terminal;
use tokio::sync::mpsc;

use crate::client::conn::{Closed, Handle, Update};
use crate::client::view::ChatView;
use crate::proto::json::ClientMsg;
use terminal::TerminalGuard;

/// How long to wait, after sending the quit, for the connection to finish.
const QUIT_WAIT: Duration = Duration::from_secs(3);
/// Most updates applied between two redraws.
const MAX_BATCH: usize = 512;

/// Where typed requests go: the connection's [`Handle`], or a channel in
/// tests.
trait Outbound {
    async fn send(&self, msg: ClientMsg) -> Result<(), Closed>;
}

impl Outbound for Handle {
    async fn send(&self, msg: ClientMsg) -> Result<(), Closed> {
        Handle::send(self, msg).await
    }
}

impl Outbound for mpsc::Sender<ClientMsg> {
    async fn send(&self, msg: ClientMsg) -> Result<(), Closed> {
        mpsc::Sender::send(self, msg).await.map_err(|_| Closed)
    }
}

/// Resolves on SIGTERM or SIGHUP, so the terminal is restored and the quit
/// sent when the window is closed or the process is told to stop.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            tokio::select! {
                _ = term.recv() => return,
                _ = hup.recv() => return,
            }
        }
    }
    std::future::pending::<()>().await
}

/// Runs the interface until the user quits (or the connection has ended
/// and a key is pressed). Takes over the terminal and always gives it back.
pub async fn run(
    handle: Handle,
    mut updates: mpsc::Receiver<Update>,
    view: ChatView,
    options: Options,
) -> io::Result<()> {
    let guard = TerminalGuard::enter()?;
    let result = async {
        let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        terminal.clear()?;
        let mut app = App::new(view);
        app.options = options;
        event_loop(
            &mut terminal,
            &mut app,
            &handle,
            &mut updates,
            EventStream::new(),
            stop_signal(),
            ring_bell,
        )
        .await
    }
    .await;
    drop(guard);
    result
}

/// Rings the terminal's bell (BEL), which terminals show or sound as
/// their user has set them to.
fn ring_bell() {
    use std::io::Write;
    let mut out = io::stdout();
    let _ = out.write_all(b"\x07").and_then(|()| out.flush());
}

/// Sends the quit and gives the connection a moment to deliver it (it
/// closes the update channel when done).
async fn quit<O: Outbound>(out: &O, updates: &mut mpsc::Receiver<Update>, reason: Option<String>) {
    if out.send(ClientMsg::Quit { reason }).await.is_ok() {
        let _ = tokio::time::timeout(QUIT_WAIT, async { while updates.recv().await.is_some() {} })
            .await;
    }
}

async fn event_loop<B, E, O>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    out: &O,
    updates: &mut mpsc::Receiver<Update>,
    mut events: E,
    stop: impl Future<Output = ()>,
    ring: impl Fn(),
) -> io::Result<()>
where
    B: Backend,
    E: Stream<Item = io::Result<Event>> + Unpin,
    O: Outbound,
{
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut updates_open = true;
    tokio::pin!(stop);
    loop {
        terminal.draw(|frame| app.draw(frame))?;
        if app.take_bell() {
            ring();
        }
        tokio::select! {
            event = events.next() => {
                // No more terminal input: leave as if the user quit.
                let Some(event) = event else {
                    if updates_open {
                        quit(out, updates, None).await;
                    }
                    return Ok(());
                };
                match app.on_event(event?) {
                    Effect::None => {}
                    Effect::Clear => terminal.clear()?,
                    Effect::Send(msg) => {
                        if out.send(msg).await.is_err() {
                            app.view.note_error("not sent: the connection has ended".into());
                        }
                    }
                    Effect::Quit(reason) => {
                        quit(out, updates, reason).await;
                        return Ok(());
                    }
                    Effect::Exit => return Ok(()),
                }
            }
            update = updates.recv(), if updates_open => match update {
                Some(update) => {
                    app.apply(update);
                    for _ in 1..MAX_BATCH {
                        match updates.try_recv() {
                            Ok(update) => app.apply(update),
                            Err(_) => break,
                        }
                    }
                }
                None => {
                    updates_open = false;
                    app.view.set_ended();
                }
            },
            _ = tick.tick() => {}
            () = &mut stop => {
                if updates_open {
                    quit(out, updates, None).await;
                }
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::KeyCode;

    use super::test_util::{key, rows, stored, view, T};
    use super::*;
    use crate::proto::json::ServerMsg;

    #[tokio::test(start_paused = true)]
    async fn event_loop_sends_echoes_and_quits() {
        let mut app = App::new(view());
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let (up_tx, mut up_rx) = mpsc::channel(16);
        let mut terminal = Terminal::new(TestBackend::new(60, 10)).unwrap();
        // The update for bob's line arrives before any key.
        up_tx
            .send(Update::Msg(ServerMsg::Message {
                room: "lobby".into(),
                seq: 1,
                ts: T,
                from: "bob".into(),
                text: "ping".into(),
                action: false,
            }))
            .await
            .unwrap();
        let mut keys: Vec<io::Result<Event>> = "pong"
            .chars()
            .map(|c| Ok(Event::Key(key(KeyCode::Char(c)))))
            .collect();
        keys.push(Ok(Event::Key(key(KeyCode::Enter))));
        // Give the update a chance before the keys arrive.
        let events = futures::stream::once(async {
            tokio::task::yield_now().await;
            Ok(Event::Resize(60, 10))
        })
        .chain(futures::stream::iter(keys))
        .chain(futures::stream::pending());
        let stop = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        event_loop(
            &mut terminal,
            &mut app,
            &out_tx,
            &mut up_rx,
            Box::pin(events),
            stop,
            || {},
        )
        .await
        .unwrap();
        assert!(
            matches!(out_rx.recv().await, Some(ClientMsg::Say { ref text, .. }) if text == "pong")
        );
        // The stop signal made it leave politely.
        assert_eq!(out_rx.recv().await, Some(ClientMsg::Quit { reason: None }));
        let screen = rows(terminal.backend().buffer()).join("\n");
        assert!(screen.contains("<bob> ping"), "{screen}");
        assert!(screen.contains("<alice> pong"), "{screen}");
        drop(up_tx);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wheel_past_the_top_asks_the_server_and_shows_the_page() {
        let mut app = App::new(view());
        app.apply(Update::Msg(ServerMsg::History {
            id: None,
            room: "lobby".into(),
            messages: stored(41..=43),
            more: true,
        }));
        let (out_tx, mut out_rx) = mpsc::channel(16);
        // Room for one update: a second send returns only once the loop
        // has taken the first.
        let (up_tx, mut up_rx) = mpsc::channel(1);
        let (ev_tx, ev_rx) = mpsc::channel::<io::Result<Event>>(4);
        let events =
            futures::stream::unfold(
                ev_rx,
                |mut rx| async move { rx.recv().await.map(|e| (e, rx)) },
            );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut terminal = Terminal::new(TestBackend::new(60, 12)).unwrap();
        let driver = async {
            let wheel = Event::Mouse(ratatui::crossterm::event::MouseEvent {
                kind: ratatui::crossterm::event::MouseEventKind::ScrollUp,
                column: 0,
                row: 0,
                modifiers: ratatui::crossterm::event::KeyModifiers::NONE,
            });
            ev_tx.send(Ok(wheel)).await.unwrap();
            let Some(ClientMsg::History {
                id: Some(id),
                room,
                before,
                limit,
            }) = out_rx.recv().await
            else {
                panic!("expected a history request");
            };
            assert_eq!(
                (room.as_str(), before, limit),
                ("lobby", Some(41), Some(50))
            );
            up_tx
                .send(Update::Msg(ServerMsg::History {
                    id: Some(id),
                    room: "lobby".into(),
                    messages: stored(31..=40),
                    more: true,
                }))
                .await
                .unwrap();
            up_tx
                .send(Update::Msg(ServerMsg::Pong { token: "x".into() }))
                .await
                .unwrap();
            let _ = stop_tx.send(());
        };
        let (result, ()) = tokio::join!(
            event_loop(
                &mut terminal,
                &mut app,
                &out_tx,
                &mut up_rx,
                Box::pin(events),
                async {
                    let _ = stop_rx.await;
                },
                || {},
            ),
            driver
        );
        result.unwrap();
        let screen = rows(terminal.backend().buffer());
        let row_of = |text: &str| screen.iter().position(|r| r.contains(text));
        let (Some(a), Some(b), Some(c)) = (
            row_of("<bob> line 35"),
            row_of("<bob> line 40"),
            row_of("<bob> line 41"),
        ) else {
            panic!("the page is not shown:\n{}", screen.join("\n"));
        };
        assert!(a < b && b + 1 == c, "{screen:#?}");
    }
}
