//! The saga tables (instances, outbox, timeouts), written once for both SQL stores over the
//! store's statements (`sql.rs`). Every method taking a [`Tx`] runs in the caller's
//! transaction.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::FiredTimeout;
use super::sql::SagaSql;
use crate::error::{Error, Result};
use crate::store::backend::{columns, stored_time, to_i64};
use crate::store::sql::{Dialect, Lease, LeaseName};
use crate::store::{SqlStore, Transaction, Tx};

/// An instance's row.
pub(crate) struct StoredInstance {
    pub state: String,
    pub completed: bool,
    /// Erased with a data subject: completed, its state gone.
    pub erased: bool,
    pub correlation_id: Uuid,
}

/// A command in the outbox.
pub(crate) struct Pending {
    pub command_id: Uuid,
    pub saga_id: String,
    pub command_type: String,
    pub stream_id: String,
    pub payload: String,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    /// The trace context it was queued in ([`crate::trace`]).
    pub traceparent: Option<String>,
}

/// A command to put in the outbox: its id, type, stream and JSON (and its place in the list).
#[derive(Serialize)]
pub(crate) struct Outbound<'a> {
    pub ord: usize,
    pub command_id: String,
    pub command_type: &'a str,
    pub stream_id: std::borrow::Cow<'a, str>,
    pub payload: &'a str,
}

/// A timeout to schedule: its id, type, JSON and due time.
#[derive(Serialize)]
pub(crate) struct Deadline<'a> {
    pub timeout_id: String,
    pub timeout_type: &'a str,
    pub payload: &'a str,
    pub due_at: String,
}

/// The counts of a saga's status: active, completed, pending, rejected, failed commands,
/// pending timeouts, erased instances.
pub(crate) type Counts = [u64; 7];

/// A time as the statements take it: RFC 3339 in UTC, as SQLite's text columns order it.
pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn id(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|error| Error::Corrupt {
        reason: format!("`{text}` is stored as a saga's id, which it is not ({error})"),
    })
}

fn json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Backend(Box::new(e)))
}

/// A statement, ready to run.
type Query = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

/// The saga tables of a store.
#[derive(Clone)]
pub(crate) struct Tables<St> {
    pub store: St,
    pub sql: Arc<SagaSql>,
}

impl<St: SqlStore> Tables<St> {
    pub fn new(store: St) -> Self {
        let sql = Arc::new(match store.dialect() {
            #[cfg(feature = "postgres")]
            Dialect::Postgres(schema) => super::postgres::statements(&schema),
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => super::sqlite::statements(),
        });
        Self { store, sql }
    }

    fn query(sql: &Arc<str>) -> Query {
        sqlx::query(sqlx::AssertSqlSafe(Arc::clone(sql)))
    }

    fn fail(&self, error: sqlx::Error) -> Error {
        self.store.fail(error)
    }

    async fn execute(&self, tx: &mut Tx<'_>, query: Query) -> Result<sqlx::any::AnyQueryResult> {
        query.execute(tx).await.map_err(|e| self.fail(e))
    }

    async fn fetch_all(&self, tx: &mut Tx<'_>, query: Query) -> Result<Vec<AnyRow>> {
        query.fetch_all(tx).await.map_err(|e| self.fail(e))
    }

    async fn fetch_optional(&self, tx: &mut Tx<'_>, query: Query) -> Result<Option<AnyRow>> {
        query.fetch_optional(tx).await.map_err(|e| self.fail(e))
    }

    async fn fetch_one(&self, tx: &mut Tx<'_>, query: Query) -> Result<AnyRow> {
        query.fetch_one(tx).await.map_err(|e| self.fail(e))
    }

    /// A write transaction (instances are changed in it).
    pub async fn begin(&self) -> Result<Transaction> {
        self.store.begin().await
    }

    async fn instance(
        &self,
        tx: &mut Tx<'_>,
        sql: &Arc<str>,
        saga: &str,
        saga_id: &str,
    ) -> Result<Option<StoredInstance>> {
        let row = self
            .fetch_optional(
                tx,
                Self::query(sql)
                    .bind(&*self.store.bookkeeping_name(saga))
                    .bind(saga_id),
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let status: String = columns::get(&row, 1)?;
        Ok(Some(StoredInstance {
            state: columns::get(&row, 0)?,
            completed: status != "active",
            erased: status == "erased",
            correlation_id: id(&columns::get::<_, String>(&row, 2)?)?,
        }))
    }

    /// An instance, its row locked for the transaction.
    pub async fn lock_instance(
        &self,
        tx: &mut Tx<'_>,
        saga: &str,
        saga_id: &str,
    ) -> Result<Option<StoredInstance>> {
        self.instance(tx, &self.sql.lock_instance, saga, saga_id)
            .await
    }

    /// An instance, not locked.
    pub async fn read_instance(&self, saga: &str, saga_id: &str) -> Result<Option<StoredInstance>> {
        let mut connection = self.store.acquire().await?;
        self.instance(&mut connection.tx(), &self.sql.read_instance, saga, saga_id)
            .await
    }

    pub async fn save_instance(
        &self,
        tx: &mut Tx<'_>,
        saga: &str,
        saga_id: &str,
        state: &str,
        completed: bool,
        correlation_id: Uuid,
    ) -> Result<()> {
        self.execute(
            tx,
            Self::query(&self.sql.save_instance)
                .bind(&*self.store.bookkeeping_name(saga))
                .bind(saga_id)
                .bind(state)
                .bind(if completed { "completed" } else { "active" })
                .bind(correlation_id.to_string()),
        )
        .await?;
        Ok(())
    }

    /// Adds commands to the outbox, in order (a command id already there is kept as is), and
    /// signals other processes' dispatchers for when the transaction commits.
    pub async fn enqueue(
        &self,
        tx: &mut Tx<'_>,
        saga: &str,
        saga_id: &str,
        correlation_id: Uuid,
        causation_id: Uuid,
        commands: &[Outbound<'_>],
    ) -> Result<()> {
        self.execute(
            tx,
            Self::query(&self.sql.enqueue)
                .bind(&*self.store.bookkeeping_name(saga))
                .bind(saga_id)
                .bind(correlation_id.to_string())
                .bind(causation_id.to_string())
                .bind(json(&commands)?)
                .bind(crate::trace::current()),
        )
        .await?;
        if let Some(signal) = &self.sql.signal {
            self.execute(
                tx,
                Self::query(signal).bind(&*self.store.bookkeeping_name(saga)),
            )
            .await?;
        }
        Ok(())
    }

    /// Cancels an instance's pending timeouts of these types (all of them with `all`).
    pub async fn cancel_timeouts(
        &self,
        tx: &mut Tx<'_>,
        saga: &str,
        saga_id: &str,
        types: &[&'static str],
        all: bool,
    ) -> Result<()> {
        self.execute(
            tx,
            Self::query(&self.sql.cancel_timeouts)
                .bind(&*self.store.bookkeeping_name(saga))
                .bind(saga_id)
                .bind(json(&types)?)
                .bind(i64::from(all)),
        )
        .await?;
        Ok(())
    }

    pub async fn schedule(
        &self,
        tx: &mut Tx<'_>,
        saga: &str,
        saga_id: &str,
        deadlines: &[Deadline<'_>],
    ) -> Result<()> {
        self.execute(
            tx,
            Self::query(&self.sql.schedule)
                .bind(&*self.store.bookkeeping_name(saga))
                .bind(saga_id)
                .bind(json(&deadlines)?),
        )
        .await?;
        Ok(())
    }

    /// The dispatch lease of the saga, unless another dispatcher holds it.
    pub async fn lock_dispatch(&self, saga: &str) -> Result<Option<Lease>> {
        self.store.try_lease(LeaseName::SagaDispatch { saga }).await
    }

    /// The first pending commands (at most `limit`), in order.
    pub async fn pending(&self, saga: &str, limit: usize) -> Result<Vec<Pending>> {
        let mut connection = self.store.acquire().await?;
        let rows = self
            .fetch_all(
                &mut connection.tx(),
                Self::query(&self.sql.pending)
                    .bind(&*self.store.bookkeeping_name(saga))
                    .bind(to_i64(limit as u64)),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Pending {
                    command_id: id(&columns::get::<_, String>(row, 0)?)?,
                    saga_id: columns::get(row, 1)?,
                    command_type: columns::get(row, 2)?,
                    stream_id: columns::get(row, 3)?,
                    payload: columns::get(row, 4)?,
                    correlation_id: id(&columns::get::<_, String>(row, 5)?)?,
                    causation_id: id(&columns::get::<_, String>(row, 6)?)?,
                    traceparent: columns::get(row, 7)?,
                })
            })
            .collect()
    }

    /// Records a command's delivery.
    pub async fn mark_command(
        &self,
        tx: &mut Tx<'_>,
        command_id: Uuid,
        status: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.mark(tx, &self.sql.mark_command, command_id, status, error)
            .await
    }

    /// Records what became of a command or a timeout (`sql`: `mark_command`, `mark_timeout`).
    async fn mark(
        &self,
        tx: &mut Tx<'_>,
        sql: &Arc<str>,
        id: Uuid,
        status: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.execute(
            tx,
            Self::query(sql)
                .bind(id.to_string())
                .bind(status)
                .bind(error),
        )
        .await?;
        Ok(())
    }

    /// Timeouts due at `now` (id, instance), oldest first.
    pub async fn due(
        &self,
        saga: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Uuid, String)>> {
        let mut connection = self.store.acquire().await?;
        let rows = self
            .fetch_all(
                &mut connection.tx(),
                Self::query(&self.sql.due)
                    .bind(&*self.store.bookkeeping_name(saga))
                    .bind(time(now))
                    .bind(to_i64(limit as u64)),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    id(&columns::get::<_, String>(row, 0)?)?,
                    columns::get(row, 1)?,
                ))
            })
            .collect()
    }

    /// A pending timeout, locked for the transaction (`None`: fired or cancelled meanwhile).
    pub async fn lock_timeout(
        &self,
        tx: &mut Tx<'_>,
        timeout_id: Uuid,
    ) -> Result<Option<FiredTimeout>> {
        let row = self
            .fetch_optional(
                tx,
                Self::query(&self.sql.lock_timeout).bind(timeout_id.to_string()),
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let due_at: String = columns::get(&row, 2)?;
        Ok(Some(FiredTimeout {
            timeout_id,
            timeout_type: columns::get(&row, 0)?,
            payload: columns::get(&row, 1)?,
            due_at: stored_time(&due_at, "a timeout's due time")?,
        }))
    }

    pub async fn mark_timeout(
        &self,
        tx: &mut Tx<'_>,
        timeout_id: Uuid,
        status: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.mark(tx, &self.sql.mark_timeout, timeout_id, status, error)
            .await
    }

    /// Records that an instance handled personal data sealed under `key`, read in plain; when
    /// the key was deleted meanwhile (its subject forgotten, here or by another process whose
    /// cache still held it), erases what the instance holds, at once. Whether it was erased.
    pub async fn record_data_key(
        &self,
        tx: &mut Tx<'_>,
        saga: &str,
        saga_id: &str,
        key_id: Uuid,
    ) -> Result<bool> {
        let key = key_id.to_string();
        self.execute(
            tx,
            Self::query(&self.sql.record_data_key)
                .bind(&*self.store.bookkeeping_name(saga))
                .bind(saga_id)
                .bind(key.as_str()),
        )
        .await?;
        let present = self
            .fetch_one(
                tx,
                Self::query(&self.sql.data_key_present).bind(key.as_str()),
            )
            .await?;
        if columns::unsigned::<_, i64, u64>(&present, 0)? > 0 {
            return Ok(false);
        }
        let [key_text, mark] = crate::store::erasure::binds(key_id);
        for statement in &self.sql.erase {
            self.execute(tx, Self::query(statement).bind(&key_text).bind(&mark))
                .await?;
        }
        Ok(true)
    }

    pub async fn counts(&self, saga: &str) -> Result<Counts> {
        let mut connection = self.store.acquire().await?;
        let row = self
            .fetch_one(
                &mut connection.tx(),
                Self::query(&self.sql.counts).bind(&*self.store.bookkeeping_name(saga)),
            )
            .await?;
        let mut counts = [0; 7];
        for (i, count) in counts.iter_mut().enumerate() {
            *count = columns::unsigned::<_, i64, _>(&row, i)?;
        }
        Ok(counts)
    }
}
