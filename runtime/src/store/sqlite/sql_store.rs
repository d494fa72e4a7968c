//! What the SQLite store offers the runners ([`SqlStore`]): `BEGIN IMMEDIATE` transactions
//! (SQLite's one writer stands in for row locks), leases as locks on files beside the database,
//! reads inside a transaction, and append hooks. Saga signals stay in the process (its
//! dispatcher is woken when a batch commits).

use std::borrow::Cow;
use std::sync::Arc;

use sqlx::AssertSqlSafe;

use super::rows::ENVELOPE_COLUMNS;
use super::{SqliteStore, backend};
use crate::envelope::RecordedEvent;
use crate::error::{Error, Result};
use crate::store::Tenancy;
use crate::store::backend::to_i64;
use crate::store::sql::{
    AppendHook, Backend, BoxFuture, Connection, Dialect, Lease, LeaseName, SqlStore, Unapplied,
    inherent_backend_methods,
};
use crate::store::tx::{self, StoreKind, Tx};

impl SqlStore for SqliteStore {}

impl Backend for SqliteStore {
    const KIND: StoreKind = StoreKind::Sqlite;

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    inherent_backend_methods!(SqliteStore);

    async fn acquire(&self) -> Result<Connection> {
        let connection = self.pool.acquire().await.map_err(backend)?;
        Ok(Connection::Sqlite(connection))
    }

    fn fail(&self, error: sqlx::Error) -> Error {
        backend(error)
    }

    fn bookkeeping_name<'a>(&self, name: &'a str) -> Cow<'a, str> {
        match self.tenancy() {
            Tenancy::Tenant(tenant) => Cow::Owned(format!("{tenant}/{name}")),
            Tenancy::All => Cow::Owned(format!("*/{name}")),
            Tenancy::None => Cow::Borrowed(name),
        }
    }

    fn event_scope(&self) -> Option<&str> {
        self.scope()
    }

    /// A lock on the file `<database>-<name>.lock`, which the operating system releases when the
    /// holder's process dies (in memory: a lock held by the store). A tenant's runners lock
    /// under their bookkeeping names.
    async fn try_lease(&self, name: LeaseName<'_>) -> Result<Option<Lease>> {
        let lock = match name {
            LeaseName::Projection { name, version } => {
                format!("projection-{}-v{version}", self.bookkeeping_name(name))
            }
            LeaseName::SagaDispatch { saga } => format!("saga-{}", self.bookkeeping_name(saga)),
            LeaseName::Relay { name } => format!("relay-{}", self.bookkeeping_name(name)),
        };
        Ok(self.try_lock(&lock)?.map(Lease::on_drop))
    }

    async fn events_by_id<'a>(&'a self, ids: &'a [String]) -> Result<Vec<RecordedEvent>> {
        let ids = serde_json::to_string(ids).map_err(|e| Error::Backend(e.into()))?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events
             WHERE event_id IN (SELECT value FROM json_each(?1)) AND (?2 IS NULL OR tenant = ?2)
             ORDER BY position"
        )))
        .bind(ids)
        .bind(self.scope())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        self.envelopes(&rows).await
    }

    async fn unapplied<'a>(
        &'a self,
        tx: &'a mut Tx<'_>,
        query: Unapplied<'a>,
    ) -> Result<Vec<RecordedEvent>> {
        let connection = tx::connection::<sqlx::SqliteConnection>(tx)?;
        let types =
            serde_json::to_string(query.event_types).map_err(|e| Error::Backend(e.into()))?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENVELOPE_COLUMNS} FROM events
             WHERE stream_id = ?1 AND stream_version > ?2 AND stream_version < ?3
               AND event_type IN (SELECT value FROM json_each(?4)) AND position > ?5
               AND (?6 IS NULL OR tenant = ?6)
             ORDER BY stream_version"
        )))
        .bind(query.stream_id)
        .bind(to_i64(query.after))
        .bind(to_i64(query.before))
        .bind(types)
        .bind(to_i64(query.checkpoint.position))
        .bind(self.scope())
        .fetch_all(&mut *connection)
        .await
        .map_err(backend)?;
        self.envelopes(&rows).await
    }

    fn with_hook(&self, hook: Arc<dyn AppendHook<Self>>) -> Self {
        let mut store = self.clone();
        let mut hooks = store.hooks.to_vec();
        hooks.push(hook);
        store.hooks = hooks.into();
        store
    }

    fn listen(
        &self,
        _channel: String,
        _wake: Arc<tokio::sync::Notify>,
    ) -> Option<BoxFuture<'static, ()>> {
        None
    }
}
