//! The SQLite store's data keys ([`KeyTable`]), read and written on the pool or inside the
//! caller's transaction (which holds the write lock), and forgetting a data subject.

use sqlx::{AssertSqlSafe, Row as _, SqliteConnection};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{SqliteStore, backend};
use crate::error::{Error, Result};
use crate::store::erasure;
use crate::store::keys::KeyTable;
use crate::store::sql::Dialect;

impl SqliteStore {
    crate::store::sql::personal_data_methods!(store => &store.forgets);
}

/// The data keys as a caller's transaction sees them, in the store's tenancy (its
/// [`scope`](crate::store::Tenancy::scope)).
pub(super) struct TxKeys<'a> {
    pub connection: Mutex<&'a mut SqliteConnection>,
    pub scope: Option<&'a str>,
}

fn key_row(row: &sqlx::sqlite::SqliteRow) -> Result<(Uuid, Vec<u8>)> {
    Ok((super::uuid(row, 0)?, row.try_get(1).map_err(backend)?))
}

// Each statement sees the keys of the store's tenancy only: `?2` (or `?4`) is its scope (`''`
// no tenant's, a tenant's name, or null for every tenant's).

async fn wrapped_key(
    connection: &mut SqliteConnection,
    scope: Option<&str>,
    id: Uuid,
) -> Result<Option<Vec<u8>>> {
    sqlx::query_scalar(
        "SELECT wrapped_key FROM data_keys WHERE key_id = ?1 AND (?2 IS NULL OR tenant = ?2)",
    )
    .bind(id.to_string())
    .bind(scope)
    .fetch_optional(&mut *connection)
    .await
    .map_err(backend)
}

async fn subject_keys(
    connection: &mut SqliteConnection,
    scope: Option<&str>,
    subject: &str,
) -> Result<Vec<(Uuid, Vec<u8>)>> {
    let rows = sqlx::query(
        "SELECT key_id, wrapped_key FROM data_keys
         WHERE subject = ?1 AND (?2 IS NULL OR tenant = ?2) ORDER BY tenant",
    )
    .bind(subject)
    .bind(scope)
    .fetch_all(&mut *connection)
    .await
    .map_err(backend)?;
    rows.iter().map(key_row).collect()
}

async fn subject_key(
    connection: &mut SqliteConnection,
    scope: Option<&str>,
    subject: &str,
) -> Result<Option<(Uuid, Vec<u8>)>> {
    Ok(subject_keys(connection, scope, subject)
        .await?
        .into_iter()
        .next())
}

async fn insert_subject_key(
    connection: &mut SqliteConnection,
    scope: Option<&str>,
    subject: &str,
    id: Uuid,
    wrapped: &[u8],
) -> Result<(Uuid, Vec<u8>)> {
    // SQLite has one writer at a time: the insert and the read that follows see the same table.
    sqlx::query(
        "INSERT INTO data_keys (key_id, tenant, subject, wrapped_key) VALUES (?1, ?4, ?2, ?3)
         ON CONFLICT (tenant, subject) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(subject)
    .bind(wrapped)
    .bind(scope.unwrap_or_default())
    .execute(&mut *connection)
    .await
    .map_err(backend)?;
    subject_key(connection, scope, subject)
        .await?
        .ok_or_else(|| Error::Corrupt {
            reason: format!("the data key stored for a subject is gone at once ({subject:?})"),
        })
}

/// See [`KeyTable::forget_subject`]: in the caller's transaction. Through a store across
/// tenants, the subject is forgotten in every tenant that has one of its id.
async fn forget_subject(
    connection: &mut SqliteConnection,
    scope: Option<&str>,
    subject: &str,
) -> Result<Option<Uuid>> {
    let keys = subject_keys(connection, scope, subject).await?;
    for (key_id, _) in &keys {
        let [key_text, mark] = erasure::binds(*key_id);
        for statement in erasure::statements(&Dialect::Sqlite) {
            sqlx::query(AssertSqlSafe(statement))
                .bind(&key_text)
                .bind(&mark)
                .execute(&mut *connection)
                .await
                .map_err(backend)?;
        }
        sqlx::query("DELETE FROM data_keys WHERE key_id = ?1")
            .bind(key_id.to_string())
            .execute(&mut *connection)
            .await
            .map_err(backend)?;
    }
    Ok(keys.first().map(|(key_id, _)| *key_id))
}

impl SqliteStore {
    async fn key_connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        self.pool.acquire().await.map_err(backend)
    }
}

impl KeyTable for SqliteStore {
    async fn wrapped_key(&self, id: Uuid) -> Result<Option<Vec<u8>>> {
        wrapped_key(&mut *self.key_connection().await?, self.scope(), id).await
    }

    async fn subject_key(&self, subject: &str) -> Result<Option<(Uuid, Vec<u8>)>> {
        subject_key(&mut *self.key_connection().await?, self.scope(), subject).await
    }

    async fn insert_subject_key(
        &self,
        subject: &str,
        id: Uuid,
        wrapped: &[u8],
    ) -> Result<(Uuid, Vec<u8>)> {
        // A write: in a transaction that takes the write lock at once, as every writer here.
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let key = insert_subject_key(&mut transaction, self.scope(), subject, id, wrapped).await?;
        transaction.commit().await.map_err(backend)?;
        Ok(key)
    }

    async fn forget_subject(&self, subject: &str) -> Result<Option<Uuid>> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let forgotten = forget_subject(&mut transaction, self.scope(), subject).await?;
        transaction.commit().await.map_err(backend)?;
        Ok(forgotten)
    }
}

impl KeyTable for TxKeys<'_> {
    async fn wrapped_key(&self, id: Uuid) -> Result<Option<Vec<u8>>> {
        wrapped_key(&mut **self.connection.lock().await, self.scope, id).await
    }

    async fn subject_key(&self, subject: &str) -> Result<Option<(Uuid, Vec<u8>)>> {
        subject_key(&mut **self.connection.lock().await, self.scope, subject).await
    }

    async fn insert_subject_key(
        &self,
        subject: &str,
        id: Uuid,
        wrapped: &[u8],
    ) -> Result<(Uuid, Vec<u8>)> {
        let mut connection = self.connection.lock().await;
        insert_subject_key(&mut connection, self.scope, subject, id, wrapped).await
    }

    async fn forget_subject(&self, subject: &str) -> Result<Option<Uuid>> {
        forget_subject(&mut **self.connection.lock().await, self.scope, subject).await
    }

    fn committed(&self) -> bool {
        false
    }
}
