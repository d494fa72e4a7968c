//! How the tool prints: JSON for `--json` ([`print_json`], [`envelope`]), aligned plain-text
//! tables otherwise ([`Table`]), and [`print_list`] for a command that prints a list either way.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::envelope::RecordedEvent;

/// How times are printed in tables and lines (JSON keeps RFC 3339).
pub(super) const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";

/// An envelope as the tool prints it.
#[derive(Serialize)]
pub(super) struct EnvelopeRow<'a> {
    stream_id: &'a str,
    stream_version: u64,
    global_position: u64,
    aggregate_type: &'a str,
    event_type: &'a str,
    schema_version: u32,
    event_id: String,
    recorded_at: DateTime<Utc>,
    correlation_id: String,
    causation_id: String,
    actor: Option<&'a str>,
    metadata: &'a crate::envelope::Metadata,
    /// Its subject's personal data was forgotten (only when so).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    shredded: bool,
    event: serde_json::Value,
}

pub(super) fn envelope(event: &RecordedEvent) -> EnvelopeRow<'_> {
    EnvelopeRow {
        stream_id: &event.stream_id,
        stream_version: event.stream_version,
        global_position: event.global_position,
        aggregate_type: &event.aggregate_type,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        event_id: event.event_id.to_string(),
        recorded_at: event.recorded_at,
        correlation_id: event.correlation_id.to_string(),
        causation_id: event.causation_id.to_string(),
        actor: event.actor.as_deref(),
        metadata: &event.metadata,
        shredded: event.shredded,
        event: event.event.to_value(),
    }
}

pub(super) fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_owned())
    );
}

/// Prints `rows` as JSON, or else `empty` when there are none, or else a table of `header` with
/// the `cells` of each row.
pub(super) fn print_list<T: Serialize>(
    rows: &[T],
    json: bool,
    empty: &str,
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) {
    if json {
        print_json(&rows);
    } else if rows.is_empty() {
        println!("{empty}");
    } else {
        let mut table = Table::new(header);
        for row in rows {
            table.row(cells(row));
        }
        print!("{}", table.render());
    }
}

/// A plain text table with aligned columns.
pub(super) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub(super) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        out
    }
}
