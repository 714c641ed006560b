//! Colours and styles: the stable colour of each nick, the `HH:MM`
//! timestamp, the style of each kind of line, and [`line_parts`], which
//! turns a scrollback line into styled pieces.
//!
//! Owns only what things look like; fitting the pieces into rows is
//! [`super::wrap`]'s job and putting them on the screen [`super::render`]'s.

use ratatui::style::{Color, Modifier, Style};

use crate::client::settings::TimeFormat;
use crate::client::view::{Delivery, Kind, Line};
use crate::clock;

/// Readable foreground colours for nicks, on dark and light backgrounds.
/// Red (errors) and magenta (private messages) are left out.
const NICK_COLOURS: [Color; 10] = [
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Cyan,
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightCyan,
    Color::Indexed(208), // orange
];

/// The colour of a nick: FNV-1a over its case-folded bytes, so the same
/// person always gets the same colour.
pub fn nick_colour(nick: &str) -> Color {
    let mut hash: u32 = 0x811c_9dc5;
    for b in nick.bytes() {
        hash ^= u32::from(b.to_ascii_lowercase());
        hash = hash.wrapping_mul(0x0100_0193);
    }
    NICK_COLOURS[hash as usize % NICK_COLOURS.len()]
}

/// `HH:MM` (UTC) of a time in milliseconds since the epoch.
pub fn hhmm(ts_ms: u64) -> String {
    clock::hhmm(ts_ms)
}

const TIME: Style = Style::new().fg(Color::DarkGray);
const PRIVATE: Style = Style::new().fg(Color::LightMagenta);
const NOTICE: Style = Style::new().fg(Color::Yellow);
const ERROR: Style = Style::new().fg(Color::Red);
const JOIN: Style = Style::new().fg(Color::Green);
const LEAVE: Style = Style::new().fg(Color::Gray);
const NICK: Style = Style::new().fg(Color::Cyan);
pub(super) const INFO: Style = Style::new().fg(Color::Gray);
const PENDING: Style = Style::new().fg(Color::DarkGray);
const NOT_STORED: Style = Style::new().fg(Color::Yellow);
const FAILED: Style = Style::new()
    .fg(Color::Red)
    .add_modifier(Modifier::CROSSED_OUT);
/// A line that names me: its text stands out, its nick is reversed.
const MENTION: Style = Style::new()
    .fg(Color::LightYellow)
    .add_modifier(Modifier::BOLD);
pub(super) const STATUS_BAR: Style = Style::new().fg(Color::White).bg(Color::DarkGray);

pub(super) fn nick_style(nick: &str, me: &str) -> Style {
    let style = Style::new().fg(nick_colour(nick));
    if !me.is_empty() && nick.eq_ignore_ascii_case(me) {
        style.add_modifier(Modifier::BOLD)
    } else {
        style
    }
}

/// The styled pieces of one line: a prefix (time, nick, markers) and the
/// text, which is last. Stored history from another day shows its date.
pub(super) fn line_parts(line: &Line, me: &str, clock: &TimeFormat) -> Vec<(String, Style)> {
    let time = if line.dated {
        (format!("{} ", clock.date_time(line.ts_ms)), TIME)
    } else {
        (format!("{} ", clock.time(line.ts_ms)), TIME)
    };
    let nick = |n: &str| {
        let style = nick_style(n, me);
        let style = if line.mention {
            style.add_modifier(Modifier::REVERSED)
        } else {
            style
        };
        (n.to_string(), style)
    };
    let plain = |s: &str| (s.to_string(), Style::new());
    let text = |style: Style| {
        let style = if line.mention && !matches!(line.kind, Kind::Private) {
            style.patch(MENTION)
        } else {
            style
        };
        (line.text.clone(), style)
    };
    match &line.kind {
        Kind::Chat => vec![
            time,
            plain("<"),
            nick(&line.nick),
            plain("> "),
            text(Style::new()),
        ],
        Kind::Action => vec![
            time,
            ("* ".into(), Style::new().add_modifier(Modifier::BOLD)),
            nick(&line.nick),
            plain(" "),
            text(Style::new().add_modifier(Modifier::ITALIC)),
        ],
        Kind::Private => vec![
            time,
            ("[pm] ".into(), PRIVATE.add_modifier(Modifier::BOLD)),
            plain("<"),
            nick(&line.nick),
            plain("> "),
            text(PRIVATE),
        ],
        Kind::Own {
            action,
            to,
            delivery,
        } => {
            let style = match delivery {
                Delivery::Pending => PENDING,
                Delivery::Confirmed => Style::new(),
                Delivery::Failed => FAILED,
                Delivery::NotStored => NOT_STORED,
            };
            let mut parts = vec![time];
            if let Some(to) = to {
                parts.push((
                    format!("[pm → {to}] "),
                    PRIVATE.add_modifier(Modifier::BOLD),
                ));
            }
            let me_nick = if line.nick.is_empty() {
                "me"
            } else {
                &line.nick
            };
            if *action {
                parts.push(("* ".into(), Style::new().add_modifier(Modifier::BOLD)));
                parts.push(nick(me_nick));
                parts.push(plain(" "));
                parts.push(text(style.add_modifier(Modifier::ITALIC)));
            } else {
                parts.push(plain("<"));
                parts.push(nick(me_nick));
                parts.push(plain("> "));
                parts.push(text(if to.is_some() && style == Style::new() {
                    PRIVATE
                } else {
                    style
                }));
            }
            parts
        }
        Kind::Notice => vec![
            time,
            ("-!- ".into(), NOTICE.add_modifier(Modifier::BOLD)),
            text(NOTICE),
        ],
        Kind::Error => vec![
            time,
            ("error: ".into(), ERROR.add_modifier(Modifier::BOLD)),
            text(ERROR),
        ],
        Kind::Join => vec![time, ("--> ".into(), JOIN), text(JOIN)],
        Kind::Leave => vec![time, ("<-- ".into(), LEAVE), text(LEAVE)],
        Kind::Nick => vec![time, ("--- ".into(), NICK), text(NICK)],
        Kind::Info => vec![time, text(INFO)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tui::test_util::T;

    #[test]
    fn nick_colours_are_stable_and_varied() {
        assert_eq!(nick_colour("alice"), nick_colour("alice"));
        assert_eq!(nick_colour("Alice"), nick_colour("alice"));
        let colours: std::collections::HashSet<String> =
            ["alice", "bob", "carol", "dave", "erin", "frank"]
                .iter()
                .map(|n| format!("{:?}", nick_colour(n)))
                .collect();
        assert!(colours.len() >= 3, "{colours:?}");
        assert!(!NICK_COLOURS.contains(&Color::Red));
    }

    #[test]
    fn timestamps_format_as_hh_mm() {
        assert_eq!(hhmm(0), "00:00");
        assert_eq!(hhmm(T), "12:34");
        assert_eq!(hhmm(T + 59_999), "12:34");
        assert_eq!(hhmm(T + 60_000), "12:35");
        assert_eq!(hhmm(T + 12 * 3_600_000), "00:34");
    }
}
