//! Printing results: aligned tables for people, JSON, YAML or names for
//! scripts, colours only on a terminal without `NO_COLOR`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::cli::Format;

/// Where and how results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// The format asked for.
    pub format: Format,
    /// Whether state names are coloured.
    pub color: bool,
}

impl Printer {
    /// A printer for `format`; colours when stdout is a terminal and
    /// `NO_COLOR` is unset or empty.
    pub fn new(format: Format) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            format,
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// Prints `text` to stdout as is; a closed stdout (`| head`) is not an error.
    pub fn raw(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Prints `value` as JSON or YAML; `false` for the table and name formats,
    /// which the caller prints itself.
    pub fn structured<T: Serialize>(&self, value: &T) -> bool {
        match self.format {
            Format::Json => {
                let text = serde_json::to_string_pretty(value)
                    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
                self.raw(&format!("{text}\n"));
                true
            }
            Format::Yaml => {
                let text =
                    serde_norway::to_string(value).unwrap_or_else(|e| format!("error: '{e}'\n"));
                self.raw(&text);
                true
            }
            Format::Table | Format::Name => false,
        }
    }

    /// Prints one item of a stream: JSON on one line, YAML as a document.
    pub fn streamed<T: Serialize>(&self, value: &T) -> bool {
        match self.format {
            Format::Json => {
                let text = serde_json::to_string(value)
                    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
                self.raw(&format!("{text}\n"));
                true
            }
            Format::Yaml => {
                let text =
                    serde_norway::to_string(value).unwrap_or_else(|e| format!("error: '{e}'\n"));
                self.raw(&format!("---\n{text}"));
                true
            }
            Format::Table | Format::Name => false,
        }
    }

    /// A state name, coloured by what it means when colours are on.
    pub fn state(&self, state: &str) -> Cell {
        let code = match state {
            "Running" | "Completed" | "Allowed" | "Satisfied" => Some("32"),
            "Dead" | "Error" | "Denied" | "Unknown" | "Failed" => Some("31"),
            "Degraded" | "Paused" | "Waiting" | "Exited" => Some("33"),
            _ => None,
        };
        Cell {
            text: state.to_owned(),
            color: code.filter(|_| self.color),
        }
    }
}

/// One table cell: text and an optional ANSI colour applied after padding.
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    color: Option<&'static str>,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self { text, color: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            color: None,
        }
    }
}

impl Cell {
    /// The text, coloured when asked, padded with spaces to `width` characters.
    pub fn padded(&self, width: usize) -> String {
        let pad = " ".repeat(width.saturating_sub(self.text.chars().count()));
        match self.color {
            Some(code) => format!("\x1b[{code}m{}\x1b[0m{pad}", self.text),
            None => format!("{}{pad}", self.text),
        }
    }
}

/// Renders rows under a header, columns aligned, two spaces apart; the last
/// column is not padded.
pub fn table(header: &[&str], rows: &[Vec<Cell>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.text.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<Cell> = header.iter().map(|&h| Cell::from(h)).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(columns) {
            if i + 1 == columns {
                line.push_str(&cell.padded(0));
            } else {
                line.push_str(&cell.padded(widths[i]));
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A time in ns since the epoch as RFC 3339 (UTC, milliseconds); `-` for
/// none or 0.
pub fn time(ns: Option<i64>) -> String {
    match ns
        .and_then(|ns| u64::try_from(ns).ok())
        .filter(|&ns| ns > 0)
    {
        Some(ns) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
        }
        None => "-".to_owned(),
    }
}

/// `text`, or `-` when it is empty.
pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_colour_after_padding() {
        let printer = Printer {
            format: Format::Table,
            color: true,
        };
        let rows = vec![
            vec![
                Cell::from("parking"),
                printer.state("Waiting"),
                Cell::from("2"),
            ],
            vec![Cell::from("p"), Cell::from("Idle"), Cell::from("0")],
        ];
        let text = table(&["NAME", "STATE", "GEN"], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME     STATE    GEN");
        assert_eq!(lines[1], "parking  \x1b[33mWaiting\x1b[0m  2");
        assert_eq!(lines[2], "p        Idle     0");
    }

    #[test]
    fn times_are_rfc3339_or_a_dash() {
        assert_eq!(time(Some(1_000_000_000)), "1970-01-01T00:00:01.000Z");
        assert_eq!(time(Some(0)), "-");
        assert_eq!(time(None), "-");
        assert_eq!(time(Some(-5)), "-");
    }
}
