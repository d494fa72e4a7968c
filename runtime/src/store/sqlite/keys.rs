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

/// The data keys as a caller's transaction sees them.
pub(super) struct TxKeys<'a>(pub Mutex<&'a mut SqliteConnection>);

fn key_row(row: &sqlx::sqlite::SqliteRow) -> Result<(Uuid, Vec<u8>)> {
    Ok((super::uuid(row, 0)?, row.try_get(1).map_err(backend)?))
}

async fn wrapped_key(connection: &mut SqliteConnection, id: Uuid) -> Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT wrapped_key FROM data_keys WHERE key_id = ?1")
        .bind(id.to_string())
        .fetch_optional(&mut *connection)
        .await
        .map_err(backend)
}

async fn subject_key(
    connection: &mut SqliteConnection,
    subject: &str,
) -> Result<Option<(Uuid, Vec<u8>)>> {
    let row = sqlx::query("SELECT key_id, wrapped_key FROM data_keys WHERE subject = ?1")
        .bind(subject)
        .fetch_optional(&mut *connection)
        .await
        .map_err(backend)?;
    row.as_ref().map(key_row).transpose()
}

async fn insert_subject_key(
    connection: &mut SqliteConnection,
    subject: &str,
    id: Uuid,
    wrapped: &[u8],
) -> Result<(Uuid, Vec<u8>)> {
    // SQLite has one writer at a time: the insert and the read that follows see the same table.
    sqlx::query(
        "INSERT INTO data_keys (key_id, subject, wrapped_key) VALUES (?1, ?2, ?3)
         ON CONFLICT (subject) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(subject)
    .bind(wrapped)
    .execute(&mut *connection)
    .await
    .map_err(backend)?;
    subject_key(connection, subject)
        .await?
        .ok_or_else(|| Error::Corrupt {
            reason: format!("the data key stored for a subject is gone at once ({subject:?})"),
        })
}

/// See [`KeyTable::forget_subject`]: in the caller's transaction.
async fn forget_subject(connection: &mut SqliteConnection, subject: &str) -> Result<Option<Uuid>> {
    let Some((key_id, _)) = subject_key(connection, subject).await? else {
        return Ok(None);
    };
    for statement in erasure::statements(&Dialect::Sqlite) {
        sqlx::query(AssertSqlSafe(statement))
            .bind(key_id.to_string())
            .execute(&mut *connection)
            .await
            .map_err(backend)?;
    }
    sqlx::query("DELETE FROM data_keys WHERE subject = ?1")
        .bind(subject)
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
    Ok(Some(key_id))
}

impl SqliteStore {
    async fn key_connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        self.pool.acquire().await.map_err(backend)
    }
}

impl KeyTable for SqliteStore {
    async fn wrapped_key(&self, id: Uuid) -> Result<Option<Vec<u8>>> {
        wrapped_key(&mut *self.key_connection().await?, id).await
    }

    async fn subject_key(&self, subject: &str) -> Result<Option<(Uuid, Vec<u8>)>> {
        subject_key(&mut *self.key_connection().await?, subject).await
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
        let key = insert_subject_key(&mut transaction, subject, id, wrapped).await?;
        transaction.commit().await.map_err(backend)?;
        Ok(key)
    }

    async fn forget_subject(&self, subject: &str) -> Result<Option<Uuid>> {
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let forgotten = forget_subject(&mut transaction, subject).await?;
        transaction.commit().await.map_err(backend)?;
        Ok(forgotten)
    }
}

impl KeyTable for TxKeys<'_> {
    async fn wrapped_key(&self, id: Uuid) -> Result<Option<Vec<u8>>> {
        wrapped_key(&mut **self.0.lock().await, id).await
    }

    async fn subject_key(&self, subject: &str) -> Result<Option<(Uuid, Vec<u8>)>> {
        subject_key(&mut **self.0.lock().await, subject).await
    }

    async fn insert_subject_key(
        &self,
        subject: &str,
        id: Uuid,
        wrapped: &[u8],
    ) -> Result<(Uuid, Vec<u8>)> {
        insert_subject_key(&mut **self.0.lock().await, subject, id, wrapped).await
    }

    async fn forget_subject(&self, subject: &str) -> Result<Option<Uuid>> {
        forget_subject(&mut **self.0.lock().await, subject).await
    }

    fn committed(&self) -> bool {
        false
    }
}
