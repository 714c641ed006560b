//! Word-wrapping by display width: [`wrap`] breaks styled text into
//! screen rows (CJK and emoji take two columns), and [`render_line`] does
//! so for one scrollback line with its continuation indent.
//!
//! Owns only the breaking into rows; the styles come from
//! [`super::style`] and the rows are drawn by [`super::render`].

use std::borrow::Cow;

use ratatui::style::Style;
use ratatui::text::{Line as TextLine, Span};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use super::style::line_parts;
use super::width::display;
use crate::client::view::Line;

/// One grapheme cluster with its display width and style.
struct Cell<'a> {
    g: &'a str,
    w: usize,
    style: Style,
}

fn cells_width(cells: &[Cell<'_>]) -> usize {
    cells.iter().map(|c| c.w).sum()
}

/// Word-wraps styled text into rows of at most `width` display columns,
/// breaking after spaces where it can and inside a word where it must.
/// Rows after the first are indented by `indent` columns (which must be
/// less than `width`). Widths are those of [`UnicodeWidthStr`] per grapheme
/// cluster, as ratatui uses, so CJK and emoji take two columns.
pub(super) fn wrap(
    parts: &[(String, Style)],
    width: usize,
    indent: usize,
) -> Vec<TextLine<'static>> {
    let width = width.max(1);
    let indent = if indent < width { indent } else { 0 };
    let cont = width - indent;
    let mut rows: Vec<Vec<Cell<'_>>> = Vec::new();
    let mut row: Vec<Cell<'_>> = Vec::new();
    let mut row_w = 0;
    let mut limit = width;
    // Index in `row` just after its last space: where it may break.
    let mut brk: Option<usize> = None;
    let parts: Vec<(Cow<'_, str>, Style)> = parts.iter().map(|(t, s)| (display(t), *s)).collect();
    for (text, style) in &parts {
        for g in text.graphemes(true) {
            if g.chars().any(char::is_control) {
                continue;
            }
            let w = g.width();
            // Zero-width clusters are not drawn by ratatui; a cluster wider
            // than a whole row cannot be drawn at all.
            if w == 0 || w > cont {
                continue;
            }
            if row_w + w > limit {
                if g == " " {
                    rows.push(std::mem::take(&mut row));
                    row_w = 0;
                    limit = cont;
                    brk = None;
                    continue;
                }
                match brk {
                    Some(b) if b > 0 && cells_width(&row[b..]) + w <= cont => {
                        let tail = row.split_off(b);
                        while row.last().is_some_and(|c| c.g == " ") {
                            row.pop();
                        }
                        rows.push(std::mem::replace(&mut row, tail));
                        row_w = cells_width(&row);
                    }
                    _ => {
                        rows.push(std::mem::take(&mut row));
                        row_w = 0;
                    }
                }
                limit = cont;
                brk = None;
            }
            row.push(Cell {
                g,
                w,
                style: *style,
            });
            row_w += w;
            if g == " " {
                brk = Some(row.len());
            }
        }
    }
    if !row.is_empty() || rows.is_empty() {
        rows.push(row);
    }
    rows.into_iter()
        .enumerate()
        .map(|(i, cells)| {
            let mut spans: Vec<Span<'static>> = Vec::new();
            if i > 0 && indent > 0 {
                spans.push(Span::raw(" ".repeat(indent)));
            }
            let mut text = String::new();
            let mut style = None;
            for c in cells {
                if style.is_some_and(|s| s != c.style) {
                    spans.push(Span::styled(
                        std::mem::take(&mut text),
                        style.unwrap_or_default(),
                    ));
                }
                style = Some(c.style);
                text.push_str(c.g);
            }
            if let Some(style) = style {
                spans.push(Span::styled(text, style));
            }
            TextLine::from(spans)
        })
        .collect()
}

/// One scrollback line as screen rows `width` columns wide.
pub(super) fn render_line(
    line: &Line,
    me: &str,
    clock: &crate::client::settings::TimeFormat,
    width: usize,
) -> Vec<TextLine<'static>> {
    let parts = line_parts(line, me, clock);
    let prefix: usize = parts[..parts.len() - 1]
        .iter()
        .map(|(s, _)| s.width())
        .sum();
    // Continuation rows line up under the text, unless the prefix takes
    // most of the row; then under the nick.
    let indent = if prefix * 2 <= width {
        prefix
    } else if 12 <= width {
        6
    } else {
        0
    };
    wrap(&parts, width, indent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unbreakable_word_is_cut_to_fit() {
        let parts = vec![("x".repeat(25), Style::new())];
        let rows = wrap(&parts, 10, 0);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].width(), 10);
        assert_eq!(rows[2].width(), 5);
    }
}
