//! Bulk export and import: a store's events as JSON Lines, one envelope per line (every field:
//! ids, types, versions, stream versions, correlation and causation, actor, metadata, recording
//! time, tenant, and the source's feed position), in feed order; loaded into an empty store with
//! the same ids, stream versions, recording times, tenants and feed order (PostgreSQL through
//! `COPY`, SQLite in one transaction). Positions are the target's own: readers of the imported
//! store start from the beginning.

use std::io::Write;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
use std::{collections::HashMap, io::BufRead};

use super::{EventStore, FeedPosition, FeedQuery};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
use super::{check_stream_id, tenancy::Tenancy};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};

/// Events read per round trip while exporting.
const EXPORT_BATCH: usize = 1000;

/// Writes the events of `store` to `out` as JSON Lines, in feed order: the whole feed, or the
/// events of `streams` only. `progress` is called with the number of events written so far.
/// Returns how many were written.
///
/// # Errors
/// A store error, or an I/O error writing `out` ([`Error::Backend`]).
pub async fn export<S: EventStore>(
    store: &S,
    streams: Option<&[String]>,
    mut out: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let mut written = 0;
    let mut write = |event: &RecordedEvent, out: &mut dyn Write| -> Result<()> {
        serde_json::to_writer(&mut *out, event).map_err(|e| Error::Backend(e.into()))?;
        out.write_all(b"\n").map_err(|e| Error::Backend(e.into()))?;
        written += 1;
        progress(written);
        Ok(())
    };
    match streams {
        Some(streams) => {
            let mut events = Vec::new();
            for stream in streams {
                events.extend(store.read_stream(stream, ..).await?);
            }
            events.sort_by_key(RecordedEvent::feed_position);
            for event in &events {
                write(event, &mut out)?;
            }
        }
        None => {
            let mut after = FeedPosition::START;
            loop {
                let batch = store
                    .read_feed(&FeedQuery::after(after).limit(EXPORT_BATCH))
                    .await?;
                for event in &batch.events {
                    write(event, &mut out)?;
                }
                let done = batch.events.is_empty() && !batch.held_back;
                if batch.events.is_empty() && batch.held_back {
                    // Events of a transaction still running: wait for it to end.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                after = batch.next.max(after);
                if done {
                    break;
                }
            }
        }
    }
    out.flush().map_err(|e| Error::Backend(e.into()))?;
    Ok(written)
}

/// An export read back line by line, each line checked as it comes (an envelope; its stream id
/// valid; its stream continuing where the stream's last line left it, with the same aggregate
/// type; its event id not seen before; its tenant one the importing store may write): an
/// importer writes as it reads, and a bad line stops it, named, before it commits anything.
///
/// Each event keeps the tenant its line names. Through a tenant's store, a line naming none
/// becomes that tenant's, and a line naming another tenant is refused: a tenant's store never
/// writes another tenant's events.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) struct ExportReader<R> {
    lines: std::io::Lines<R>,
    line: u64,
    heads: HashMap<String, (u64, String)>,
    ids: std::collections::HashSet<uuid::Uuid>,
    /// The tenant of the importing store, if it is one tenant's.
    tenant: Option<String>,
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl<R: BufRead> ExportReader<R> {
    /// A reader of `input` for a store of `tenancy`.
    pub(crate) fn new(input: R, tenancy: &Tenancy) -> Self {
        Self {
            lines: input.lines(),
            line: 0,
            heads: HashMap::new(),
            ids: std::collections::HashSet::new(),
            tenant: tenancy.name().map(str::to_owned),
        }
    }

    fn check(&mut self, line: &str) -> Result<RecordedEvent> {
        let line_number = self.line;
        let invalid = |reason: String| Error::InvalidImport {
            line: line_number,
            reason,
        };
        let mut event: RecordedEvent =
            serde_json::from_str(line).map_err(|e| invalid(format!("not an envelope: {e}")))?;
        event.tenant = self.tenant_of(event.tenant.take()).map_err(invalid)?;
        check_stream_id(&event.stream_id)
            .map_err(|problem| invalid(format!("stream id {:?}: {problem}", event.stream_id)))?;
        let (head, aggregate) = self
            .heads
            .entry(event.stream_id.clone())
            .or_insert_with(|| (0, event.aggregate_type.clone()));
        if event.stream_version != *head + 1 {
            return Err(invalid(format!(
                "stream {} jumps from version {head} to {}",
                event.stream_id, event.stream_version
            )));
        }
        if event.aggregate_type != *aggregate {
            return Err(invalid(format!(
                "stream {} belongs to {aggregate}, not {}",
                event.stream_id, event.aggregate_type
            )));
        }
        if !self.ids.insert(event.event_id) {
            return Err(invalid(format!(
                "event id {} appears twice",
                event.event_id
            )));
        }
        *head = event.stream_version;
        Ok(event)
    }

    /// The tenant an event whose line names `named` is imported as (`None`: no tenant's).
    fn tenant_of(&self, named: Option<String>) -> std::result::Result<Option<String>, String> {
        let named = named.filter(|tenant| !tenant.is_empty());
        if let Some(tenant) = &named {
            Tenancy::tenant(tenant).map_err(|e| format!("its tenant: {e}"))?;
        }
        match (named, &self.tenant) {
            (None, store) => Ok(store.clone()),
            (Some(named), Some(store)) if named != *store => Err(format!(
                "its event is tenant {named}'s, and this store is tenant {store}'s: import the export through a store across tenants (each event keeps its tenant) or through {named}'s"
            )),
            (Some(named), _) => Ok(Some(named)),
        }
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl<R: BufRead> Iterator for ExportReader<R> {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(line) => line,
                Err(error) => return Some(Err(Error::Backend(error.into()))),
            };
            self.line += 1;
            if !line.trim().is_empty() {
                return Some(self.check(&line));
            }
        }
    }
}

/// A whole export, read and checked for a store of `tenancy` (SQLite imports it in one
/// transaction).
#[cfg(feature = "sqlite")]
pub(crate) fn read_export(input: impl BufRead, tenancy: &Tenancy) -> Result<Vec<RecordedEvent>> {
    ExportReader::new(input, tenancy).collect()
}

/// `text` as a field of PostgreSQL's `COPY … (FORMAT text)`: backslash, tab, newline and
/// carriage return escaped.
#[cfg(feature = "postgres")]
pub(crate) fn copy_text(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// One event as a line of `COPY events (stream_id, stream_version, aggregate_type, event_id,
/// event_type, schema_version, payload, metadata, correlation_id, causation_id, actor,
/// recorded_at, tenant) FROM STDIN` (the tenant `''` for none).
#[cfg(feature = "postgres")]
pub(crate) fn copy_line(event: &RecordedEvent, out: &mut String) -> Result<()> {
    use std::fmt::Write as _;
    let metadata = serde_json::to_string(&event.metadata).map_err(|e| Error::Backend(e.into()))?;
    copy_text(&event.stream_id, out);
    let _ = write!(out, "\t{}\t", event.stream_version);
    copy_text(&event.aggregate_type, out);
    let _ = write!(out, "\t{}\t", event.event_id);
    copy_text(&event.event_type, out);
    let _ = write!(out, "\t{}\t", event.schema_version);
    copy_text(event.event.as_str(), out);
    out.push('\t');
    copy_text(&metadata, out);
    let _ = write!(out, "\t{}\t{}\t", event.correlation_id, event.causation_id);
    match &event.actor {
        Some(actor) => copy_text(actor, out),
        None => out.push_str("\\N"),
    }
    let _ = write!(out, "\t{}\t", event.recorded_at.to_rfc3339());
    copy_text(event.tenant.as_deref().unwrap_or(""), out);
    out.push('\n');
    Ok(())
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::copy_text;

    #[test]
    fn copy_text_escapes_what_copy_reads_specially() {
        let mut out = String::new();
        copy_text("a\\b\tc\nd\re", &mut out);
        assert_eq!(out, "a\\\\b\\tc\\nd\\re");
    }
}
