//! What the PostgreSQL store offers the runners ([`SqlStore`]): transactions, leases as
//! advisory locks, reads inside a transaction, append hooks, and `LISTEN` for saga signals.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

use super::PostgresStore;
use super::statements::ENVELOPE_COLUMNS;
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::store::backend::to_i64;
use crate::store::sql::{
    AppendHook, Backend, BoxFuture, Connection, Dialect, Lease, LeaseName, SqlStore, Unapplied,
    inherent_backend_methods,
};
use crate::store::tx::{self, StoreKind, Tx};

impl SqlStore for PostgresStore {}

impl Backend for PostgresStore {
    const KIND: StoreKind = StoreKind::Postgres;

    fn dialect(&self) -> Dialect {
        Dialect::Postgres(self.inner.schema.clone())
    }

    inherent_backend_methods!(PostgresStore);

    fn keep_spare_batch(&self, events: Vec<crate::envelope::RecordedEvent>) {
        self.inner.spare_batches.keep(events);
    }

    async fn acquire(&self) -> Result<Connection> {
        let connection = self.inner.pool.acquire().await.map_err(|e| self.fail(e))?;
        Ok(Connection::Postgres(connection))
    }

    fn fail(&self, error: sqlx::Error) -> Error {
        PostgresStore::fail(self, error)
    }

    async fn measure(&self) {
        if let Err(error) = self.horizon().await {
            tracing::debug!(%error, "the feed horizon could not be read for metrics");
        }
    }

    /// A runner's lease is a session advisory lock held by a connection of its own (not the
    /// pool's), released when the lease is dropped or the connection dies with its process. A
    /// dispatcher's is a transaction-scoped advisory lock in a pooled transaction, which ends
    /// (rolled back, having written nothing) when the lease is dropped.
    async fn try_lease(&self, name: LeaseName<'_>) -> Result<Option<Lease>> {
        // Each tenant's runners keep their own bookkeeping, so they lease apart.
        let schema = self.tenancy().lease_scope(self.schema());
        let (class, key) = match name {
            LeaseName::Projection { name, version } => {
                ("factum.projection", format!("{schema}:{name}:{version}"))
            }
            LeaseName::Relay { name } => ("factum.relay", format!("{schema}:{name}")),
            LeaseName::SagaDispatch { saga } => {
                let mut transaction = self.inner.pool.begin().await.map_err(|e| self.fail(e))?;
                let taken: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1))")
                        .bind(format!("factum.saga.dispatch:{schema}:{saga}"))
                        .fetch_one(&mut *transaction)
                        .await
                        .map_err(|e| self.fail(e))?;
                return Ok(taken.then(|| Lease::transaction(transaction)));
            }
        };
        let options = self.inner.pool.connect_options();
        let mut connection = PgConnection::connect_with(&options)
            .await
            .map_err(|e| self.fail(e))?;
        let taken: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))")
                .bind(class)
                .bind(key)
                .fetch_one(&mut connection)
                .await
                .map_err(|e| self.fail(e))?;
        Ok(taken.then(|| Lease::connection(connection)))
    }

    async fn events_by_id<'a>(&'a self, ids: &'a [String]) -> Result<Vec<RecordedEvent>> {
        let ids = ids
            .iter()
            .map(|id| uuid::Uuid::parse_str(id))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Backend(e.into()))?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENVELOPE_COLUMNS} FROM {s}.events e WHERE e.event_id = ANY ($1)
             ORDER BY e.tx, e.position",
            s = self.inner.schema.quoted()
        )))
        .bind(&ids)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.fail(e))?;
        let mut events = self.read_rows(&rows, 0).await?;
        if events.len() < ids.len() {
            // Some were archived (or are not this store's to see).
            let found: std::collections::HashSet<uuid::Uuid> =
                events.iter().map(|e| e.event_id).collect();
            let missing: Vec<uuid::Uuid> =
                ids.into_iter().filter(|id| !found.contains(id)).collect();
            let mut archived = self.cold_by_id(&missing).await?;
            if !archived.is_empty() {
                self.open_pii(&mut archived).await?;
                events.extend(archived);
                events.sort_by_key(RecordedEvent::feed_position);
            }
        }
        Ok(events)
    }

    async fn unapplied<'a>(
        &'a self,
        tx: &'a mut Tx<'_>,
        query: Unapplied<'a>,
    ) -> Result<Vec<RecordedEvent>> {
        let connection = tx::connection::<sqlx::PgConnection>(tx)?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENVELOPE_COLUMNS} FROM {s}.events e
             WHERE e.stream_id = $1 AND e.stream_version > $2 AND e.stream_version < $3
               AND e.event_type = ANY ($4) AND (e.tx, e.position) > ($5::text::xid8, $6)
             ORDER BY e.stream_version",
            s = self.inner.schema.quoted()
        )))
        .bind(query.stream_id)
        .bind(to_i64(query.after))
        .bind(to_i64(query.before))
        .bind(query.event_types)
        .bind(to_i64(query.checkpoint.tx))
        .bind(to_i64(query.checkpoint.position))
        .fetch_all(&mut *connection)
        .await
        .map_err(|e| self.fail(e))?;
        let mut events = self.read_rows(&rows, 0).await?;
        // The stream's archived versions in between, if it has any.
        let mut archived = Vec::new();
        for (event, defect) in self
            .cold_stream(
                query.stream_id,
                query.after + 1,
                query.before.saturating_sub(1),
            )
            .await?
        {
            if query.event_types.contains(&event.event_type.as_str())
                && event.feed_position() > query.checkpoint
            {
                archived.push(crate::store::strict_envelope((event, defect))?);
            }
        }
        if !archived.is_empty() {
            self.open_pii(&mut archived).await?;
            events.extend(archived);
            events.sort_by_key(|event| event.stream_version);
        }
        Ok(events)
    }

    fn with_hook(&self, hook: Arc<dyn AppendHook<Self>>) -> Self {
        let mut hooks = self.hooks.to_vec();
        hooks.push(hook);
        Self {
            inner: Arc::clone(&self.inner),
            hooks: hooks.into(),
            limits: self.limits,
            group: self.group.clone(),
            keys: self.keys.clone(),
        }
    }

    fn listen(
        &self,
        channel: String,
        wake: Arc<tokio::sync::Notify>,
    ) -> Option<BoxFuture<'static, ()>> {
        let pool = self.inner.pool.clone();
        Some(Box::pin(async move {
            loop {
                let listening = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(&channel).await?;
                    loop {
                        listener.recv().await?;
                        wake.notify_one();
                    }
                };
                let result: std::result::Result<(), sqlx::Error> = listening.await;
                if let Err(error) = result {
                    tracing::debug!(%error, channel, "not listening; polling meanwhile");
                }
                // Whatever was signalled while not listening is found by looking now.
                wake.notify_one();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
}
