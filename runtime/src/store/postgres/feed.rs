//! The global feed on PostgreSQL: the runners' reads (a horizon row, then the events below
//! it, archived events merged in) and what holds the horizon back.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Row as _};

use super::rows::{refill_envelope, refill_origin, refill_source};
use super::{PostgresStore, archive};
use crate::envelope::{EnvelopeFields, RecordedEvent};
use crate::error::{Error, Result};
use crate::store::backend::{columns, to_i64};
use crate::store::{FeedBatch, FeedPosition, FeedQuery, refill_envelopes};

impl PostgresStore {
    /// What holds the global feed back: readers see events up to the oldest running transaction,
    /// so a long transaction (of any application on the server) delays them until it ends.
    ///
    /// # Errors
    /// A database error.
    pub async fn horizon(&self) -> Result<FeedHorizon> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.horizon.clone()))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))?;
        let get = |error| self.fail(error);
        let oldest = if row.try_get::<bool, _>(2).map_err(get)? {
            Some(OpenTransaction {
                pid: row.try_get(3).map_err(get)?,
                age: row
                    .try_get::<Option<f64>, _>(4)
                    .map_err(get)?
                    .map(|seconds| Duration::from_secs_f64(seconds.max(0.0))),
                database: row.try_get(5).map_err(get)?,
                state: row.try_get(6).map_err(get)?,
                query: row.try_get(7).map_err(get)?,
                prepared: row.try_get(8).map_err(get)?,
                owner: row.try_get(9).map_err(get)?,
            })
        } else {
            None
        };
        crate::metrics::feed_horizon(
            self.schema(),
            oldest
                .as_ref()
                .and_then(|oldest| oldest.age)
                .unwrap_or_default(),
        );
        Ok(FeedHorizon {
            horizon_tx: columns::unsigned::<_, i64, _>(&row, 0)?,
            newest_event_tx: columns::unsigned_opt::<_, i64, _>(&row, 1)?,
            oldest_open_transaction: oldest,
        })
    }

    /// The feed as runners read it ([`Backend::read_feed_parking`](crate::store::sql::Backend)): an
    /// event whose metadata does not read is delivered with empty metadata and named in the
    /// batch's `undecodable`.
    pub(crate) async fn read_feed_parking(&self, query: &FeedQuery) -> Result<FeedBatch> {
        #[cfg(feature = "archive")]
        for _ in 1..archive::STREAM_READ_ATTEMPTS {
            let read = self.read_feed_once(query).await;
            // An archive restored after the read found it: its events are back in the table.
            if let Err(Error::Archive(crate::archive::ArchiveError::Read { archive, .. })) = &read
                && !self.archive_exists(*archive).await?
            {
                continue;
            }
            return read;
        }
        self.read_feed_once(query).await
    }

    /// One read of [`PostgresStore::read_feed_parking`].
    pub(super) async fn read_feed_once(&self, query: &FeedQuery) -> Result<FeedBatch> {
        if query.limit == 0 {
            return Ok(FeedBatch::new(Vec::new(), query.after));
        }
        let mut guess = self.guess_cold(query).await;
        loop {
            if let Some(batch) = self.read_feed_guessing(query, guess.take()).await? {
                return Ok(batch);
            }
            // The cold tier moved since the guess (an archiving or a restore committed): read
            // again without one, which always gives a batch.
        }
    }

    /// A read of the feed, the table's rows read up to `guess`'s last archived event when
    /// there is a guess; `None` when the statement's own list of archives shows the guess
    /// wrong.
    pub(super) async fn read_feed_guessing(
        &self,
        query: &FeedQuery,
        guess: Option<archive::ColdGuess>,
    ) -> Result<Option<FeedBatch>> {
        let limit = to_i64(query.limit as u64);
        let sql = &self.inner.sql;
        let statement =
            sql.read_feed
                .get(query.fields, query.event_types.is_some(), guess.is_some());
        let mut sql = sqlx::query(AssertSqlSafe(statement.clone()))
            .bind(to_i64(query.after.tx))
            .bind(to_i64(query.after.position))
            .bind(limit);
        if let Some(types) = &query.event_types {
            sql = sql.bind(types);
        }
        let through = guess.as_ref().map(|guess| guess.through);
        if let Some(through) = through {
            sql = sql.bind(to_i64(through.tx)).bind(to_i64(through.position));
        }
        let rows = sql
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))?;
        // The horizon's row, then the events'.
        let Some((first, rows)) = rows.split_first() else {
            return Err(Error::Corrupt {
                reason: "a read of the feed returned no horizon".to_owned(),
            });
        };
        // The union keeps its branches' order in practice; say so plainly if it ever does not.
        let Some(horizon) = columns::unsigned_opt::<_, i64, u64>(first, 0)? else {
            return Err(Error::Corrupt {
                reason: "a read of the feed returned an event before its horizon".to_owned(),
            });
        };
        let held_back: bool = columns::get(first, 1)?;
        let newest: Option<u64> = columns::unsigned_opt::<_, i64, _>(first, 2)?;
        let cold = columns::get::<_, Option<String>>(first, 3)?
            .map(|cold| archive::ColdArchives::parse(&cold))
            .transpose()?;
        let guess = match guess {
            Some(guess) if !guess.holds(cold.as_ref()) => return Ok(None),
            guess => guess,
        };
        self.remember_cold(cold.as_ref());
        // The rows go into the envelopes of batches the runners are done with.
        let spare = || self.inner.spare_batches.take();
        let (mut events, mut undecodable, stopped) = match query.fields {
            EnvelopeFields::Source => refill_envelopes(rows, spare(), |row, slot| {
                refill_source(row, 4, slot).map(|()| None)
            })?,
            EnvelopeFields::Origin => refill_envelopes(rows, spare(), |row, slot| {
                refill_origin(row, 4, slot).map(|()| None)
            })?,
            EnvelopeFields::All => {
                refill_envelopes(rows, spare(), |row, slot| refill_envelope(row, 4, slot))?
            }
        };
        // Whether the table's events stopped the batch (its size reached, or an event no
        // runner may pass).
        let cut = stopped || events.len() >= query.limit;
        let mut next = match (events.last(), newest, through) {
            (Some(last), _, _) if cut => last.feed_position(),
            // The table was read up to the guessed archived events' last.
            (_, _, Some(through)) => through.max(query.after),
            // Everything below the horizon has been read: every transaction below it has ended.
            // The position goes no further than the newest stored event, so that no checkpoint
            // runs ahead of the events (a store adopted by another cluster continues after the
            // newest event: see `PostgresStore::adopt_cluster`).
            (_, Some(newest), None) => {
                FeedPosition::end_of_tx(newest.min(horizon.saturating_sub(1))).max(query.after)
            }
            (_, None, None) => query.after,
        };
        // Archived events after the position (guessed, or read now): merged in feed order, up
        // to the batch's size, and no further than the table's events when those stopped the
        // batch.
        let archived = match (guess, cold) {
            (Some(guess), _) => Some(guess.events),
            (None, Some(cold)) => Some(
                self.cold_feed(
                    &cold,
                    query.after,
                    query.limit,
                    query.event_types.as_deref(),
                )
                .await?,
            ),
            (None, None) => None,
        };
        if let Some(mut archived) = archived {
            let bound = cut.then_some(next);
            archived.retain(|(event, _)| bound.is_none_or(|bound| event.feed_position() <= bound));
            if !archived.is_empty() {
                for (event, defect) in archived {
                    undecodable.extend(defect);
                    events.push(event);
                }
                events.sort_by_key(RecordedEvent::feed_position);
                if events.len() > query.limit {
                    events.truncate(query.limit);
                    undecodable.retain(|bad| events.iter().any(|e| e.event_id == bad.event_id));
                }
                if let Some(last) = events.last() {
                    next = if bound.is_some() || events.len() >= query.limit {
                        last.feed_position()
                    } else {
                        next.max(last.feed_position())
                    };
                }
            }
        }
        self.open_pii(&mut events).await?;
        let mut batch = FeedBatch::new(events, next).held_back(held_back);
        batch.undecodable = undecodable;
        Ok(Some(batch))
    }
}

/// What holds the global feed's horizon back.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FeedHorizon {
    /// Readers see events of transactions below this id.
    pub horizon_tx: u64,
    /// The transaction of the newest stored event.
    pub newest_event_tx: Option<u64>,
    /// The oldest transaction still running (holding the horizon), if any.
    pub oldest_open_transaction: Option<OpenTransaction>,
}

/// A transaction holding the feed back: a running one (its session's details come from
/// `pg_stat_activity`), or a prepared (two-phase) one, which no session holds and which lasts
/// until someone runs `COMMIT PREPARED` or `ROLLBACK PREPARED` with its `prepared` id.
///
/// Any role sees that a transaction is open, its process, database and owner. Its age, state
/// and query are `None` for other roles' sessions unless the store's role may read all
/// statistics: `GRANT pg_read_all_stats TO <role>;` (PostgreSQL 10 or later).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OpenTransaction {
    /// Its backend's process id; `None` for a prepared transaction.
    pub pid: Option<i32>,
    /// How long it has been running (since it was prepared, for a prepared one); `None` when
    /// the role may not see it.
    pub age: Option<Duration>,
    /// Its database.
    pub database: Option<String>,
    /// Its state (`active`, `idle in transaction`, `prepared`...).
    pub state: Option<String>,
    /// Its current or last query (truncated).
    pub query: Option<String>,
    /// The global id of a prepared transaction (`PREPARE TRANSACTION '<id>'`).
    pub prepared: Option<String>,
    /// The role running it.
    pub owner: Option<String>,
}
