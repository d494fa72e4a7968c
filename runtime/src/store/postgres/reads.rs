//! Stream reads on PostgreSQL: the table's rows with the archived versions merged in, and
//! replayed events handed on with their personal data opened.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgRow;

use super::rows::{Replayed, envelope_from_row, replayed_event, version_at};
use super::{PostgresStore, archive};
use crate::envelope::RecordedEvent;
use crate::error::Result;
use crate::store::backend::to_i64;
use crate::store::keys::{InPlace, Keyring, LastKey};
use crate::store::{EventStore as _, HistoryItem, ReadEnvelope, StreamEventRef};

impl PostgresStore {
    /// Reads back the events of an idempotent retry.
    pub(super) async fn read_versions(
        &self,
        stream_id: &str,
        versions: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_stream(stream_id, versions).await
    }

    /// The rows of a stream read (`sql` takes the stream and inclusive version bounds).
    pub(super) async fn stream_rows(
        &self,
        sql: &Arc<str>,
        stream_id: &str,
        (from, to): (u64, u64),
    ) -> Result<Vec<PgRow>> {
        sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(stream_id)
            .bind(to_i64(from))
            .bind(to_i64(to))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The events of `rows`, their personal data opened.
    pub(crate) async fn read_rows(
        &self,
        rows: &[PgRow],
        first_column: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let mut events = rows
            .iter()
            .map(|row| envelope_from_row(row, first_column))
            .collect::<Result<Vec<_>>>()?;
        self.open_pii(&mut events).await?;
        Ok(events)
    }

    /// Opens the personal data of events read (nothing to do without a key provider: sealed
    /// fields stay sealed).
    pub(super) async fn open_pii(&self, events: &mut [RecordedEvent]) -> Result<()> {
        match &self.keys {
            Some(keys) => keys.open(self, events).await,
            None => Ok(()),
        }
    }

    /// A stream read (`sql`, whose rows hold the stream version at column `version`) with the
    /// versions the table lacks (archived) merged in from the cold tier, in version order: the
    /// table's rows as `hot` reads them, the archived events as `archived` makes them. Read
    /// again when the cold tier moved under the read; refused when a gap stays.
    pub(super) async fn stream_read<T: Send>(
        &self,
        sql: &Arc<str>,
        stream_id: &str,
        bounds: (u64, u64),
        version: usize,
        hot: impl Fn(&PgRow) -> Result<T> + Sync,
        archived: impl Fn(ReadEnvelope) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        for _ in 0..archive::STREAM_READ_ATTEMPTS {
            let rows = self.stream_rows(sql, stream_id, bounds).await?;
            let versions = rows
                .iter()
                .map(|row| version_at(row, version))
                .collect::<Result<Vec<_>>>()?;
            let Some((from, through)) = archive::missing_span(bounds.0, bounds.1, &versions) else {
                return rows.iter().map(&hot).collect();
            };
            let mut merged = BTreeMap::new();
            for event in self.cold_stream(stream_id, from, through).await? {
                merged.insert(event.0.stream_version, archived(event)?);
            }
            for (row, version) in rows.iter().zip(versions) {
                merged.insert(version, hot(row)?);
            }
            if archive::contiguous(bounds.0, merged.keys().copied()) {
                return Ok(merged.into_values().collect());
            }
        }
        Err(archive::moved(stream_id))
    }

    /// A stream's archived versions `from..=through`, by version. An archived event whose
    /// metadata does not read loads all the same: a load reads no metadata from the table.
    pub(super) async fn cold_versions(
        &self,
        stream_id: &str,
        from: u64,
        through: u64,
    ) -> Result<BTreeMap<u64, RecordedEvent>> {
        Ok(self
            .cold_stream(stream_id, from, through)
            .await?
            .into_iter()
            .map(|(event, _)| (event.stream_version, event))
            .collect())
    }

    /// Hands an archived event to `visit` as a replayed one, its personal data opened.
    pub(super) async fn visit_recorded<F>(
        &self,
        event: &RecordedEvent,
        visit: &mut F,
        last: &mut LastKey,
    ) -> Result<()>
    where
        F: FnMut(HistoryItem<'_>) -> Result<()> + Send,
    {
        let event = StreamEventRef::new(
            event.stream_version,
            &event.aggregate_type,
            &event.event_type,
            event.schema_version,
            event.event.as_str(),
        );
        self.visit_event(
            Replayed {
                event,
                sealed: None,
            },
            visit,
            last,
        )
        .await
    }

    /// Hands the event of a replayed row ([`REPLAY_COLUMNS`]) to `visit`, its personal data opened.
    ///
    /// [`REPLAY_COLUMNS`]: super::statements::REPLAY_COLUMNS
    pub(super) async fn visit_replayed<F>(
        &self,
        row: &PgRow,
        aggregate_type: &str,
        visit: &mut F,
        last: &mut LastKey,
    ) -> Result<()>
    where
        F: FnMut(HistoryItem<'_>) -> Result<()> + Send,
    {
        self.visit_event(replayed_event(row, 0, aggregate_type)?, visit, last)
            .await
    }

    /// Hands a replayed event to `visit`, its personal data opened.
    pub(super) async fn visit_event<F>(
        &self,
        event: Replayed<'_>,
        visit: &mut F,
        last: &mut LastKey,
    ) -> Result<()>
    where
        F: FnMut(HistoryItem<'_>) -> Result<()> + Send,
    {
        match self.visit_now(event, visit, last)? {
            Some(event) => self.visit_looked_up(event, visit, last).await,
            None => Ok(()),
        }
    }

    /// Hands to `visit` an event [`PostgresStore::visit_now`] gave back, opened under its key
    /// looked up (and kept in `last` for the events after it).
    pub(super) async fn visit_looked_up<F>(
        &self,
        event: Replayed<'_>,
        visit: &mut F,
        last: &mut LastKey,
    ) -> Result<()>
    where
        F: FnMut(HistoryItem<'_>) -> Result<()> + Send,
    {
        visit(HistoryItem::Event(self.open_replayed(event, last).await?))
    }

    /// [`PostgresStore::visit_event`] without waiting, for most of a read's events: those with
    /// nothing sealed, or sealed under the key `last` holds; the event back when its key is to
    /// be looked up (then [`PostgresStore::visit_looked_up`]).
    pub(super) fn visit_now<'r, F>(
        &self,
        replayed: Replayed<'r>,
        visit: &mut F,
        last: &mut LastKey,
    ) -> Result<Option<Replayed<'r>>>
    where
        F: FnMut(HistoryItem<'_>) -> Result<()> + Send,
    {
        if self.keys.is_none() {
            return visit(HistoryItem::Event(sealed_inside(replayed, last)?)).map(|()| None);
        }
        let Replayed { event, sealed } = replayed;
        match Keyring::open_payload_kept(event.payload, sealed, last)? {
            InPlace::Plain => visit(HistoryItem::Event(event))?,
            InPlace::Opened(opened) => visit(HistoryItem::Event(event.with_payload(opened)))?,
            InPlace::NeedsKey => return Ok(Some(Replayed { event, sealed })),
        }
        Ok(None)
    }

    /// A replayed event with its personal data opened, into `last`'s buffer when it had sealed
    /// fields (`last` also holds the key of the read's event before). Without a key provider,
    /// a row's sealed column is put inside its payload, sealed, as the other reads hand it on.
    pub(super) async fn open_replayed<'r>(
        &self,
        replayed: Replayed<'r>,
        last: &'r mut LastKey,
    ) -> Result<StreamEventRef<'r>> {
        let Some(keys) = &self.keys else {
            return sealed_inside(replayed, last);
        };
        let Replayed { event, sealed } = replayed;
        Ok(
            match keys
                .open_payload_in_place(self, event.payload, sealed, last)
                .await?
            {
                Some(opened) => event.with_payload(opened),
                None => event,
            },
        )
    }
}

/// A replayed event as reads hand it on without a key provider: its row's sealed column, if
/// any, put inside its payload (into `last`'s buffer), sealed.
fn sealed_inside<'r>(replayed: Replayed<'r>, last: &'r mut LastKey) -> Result<StreamEventRef<'r>> {
    let Replayed { event, sealed } = replayed;
    Ok(match sealed {
        Some(sealed) => event.with_payload(last.hold(crate::pii::inline(event.payload, sealed)?)),
        None => event,
    })
}
