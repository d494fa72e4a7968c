//! The PostgreSQL store's data keys ([`KeyTable`]) and what it does with them: forgetting a data
//! subject.

use sqlx::{AssertSqlSafe, Row as _};
use uuid::Uuid;

use super::PostgresStore;
use crate::error::{Error, Result};
use crate::store::erasure;
use crate::store::keys::KeyTable;
use crate::store::sql::Backend as _;

impl PostgresStore {
    crate::store::sql::personal_data_methods!(store => &store.inner.forgets);

    fn keys_sql(&self, sql: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(sql.replace("{schema}", self.inner.schema.quoted()))
    }
}

fn key_row(row: &sqlx::postgres::PgRow) -> Result<(Uuid, Vec<u8>)> {
    Ok((
        row.try_get(0).map_err(Error::Database)?,
        row.try_get(1).map_err(Error::Database)?,
    ))
}

impl KeyTable for PostgresStore {
    /// The events' `sealed` column (migration 24): a long stream's rows travel half as long.
    fn placement(&self) -> crate::pii::Placement {
        crate::pii::Placement::Column
    }

    async fn wrapped_key(&self, id: Uuid) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(
            self.keys_sql("SELECT wrapped_key FROM {schema}.data_keys WHERE key_id = $1"),
        )
        .bind(id)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(|e| self.fail(e))
    }

    async fn subject_key(&self, subject: &str) -> Result<Option<(Uuid, Vec<u8>)>> {
        let row = sqlx::query(
            self.keys_sql("SELECT key_id, wrapped_key FROM {schema}.data_keys WHERE subject = $1"),
        )
        .bind(subject)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(|e| self.fail(e))?;
        row.as_ref().map(key_row).transpose()
    }

    async fn insert_subject_key(
        &self,
        subject: &str,
        id: Uuid,
        wrapped: &[u8],
    ) -> Result<(Uuid, Vec<u8>)> {
        // Another writer may give the subject its key first: then that one is the subject's.
        // Its row may be too new for the statement's snapshot, or forgotten at once: again.
        // The key found is of the tenant the insert names (the column's default), even for a
        // role that reads past row-level security: a key is never another tenant's subject's.
        loop {
            let row = sqlx::query(self.keys_sql(
                "WITH new AS (
                 INSERT INTO {schema}.data_keys (key_id, subject, wrapped_key)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (tenant, subject) DO NOTHING
                 RETURNING key_id, wrapped_key
             )
             SELECT key_id, wrapped_key FROM new
             UNION ALL
             SELECT key_id, wrapped_key FROM {schema}.data_keys
             WHERE subject = $2 AND tenant = coalesce(current_setting('factum.tenant', true), '')
             LIMIT 1",
            ))
            .bind(id)
            .bind(subject)
            .bind(wrapped)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))?;
            if let Some(row) = row {
                return key_row(&row);
            }
        }
    }

    /// One statement either way: the offer, or the subject's key found by its index.
    fn offers_first(&self) -> bool {
        true
    }

    async fn forget_subject(&self, subject: &str) -> Result<Option<Uuid>> {
        let mut transaction = self.inner.pool.begin().await.map_err(|e| self.fail(e))?;
        // Deleting the key waits for the sagas that hold it locked while they write what they
        // read with it; the erasure, a statement of its own, sees what they committed.
        let key: Option<Uuid> = sqlx::query_scalar(
            self.keys_sql("DELETE FROM {schema}.data_keys WHERE subject = $1 RETURNING key_id"),
        )
        .bind(subject)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(|e| self.fail(e))?;
        let Some(key) = key else {
            return Ok(None);
        };
        let [key_text, mark] = erasure::binds(key);
        for statement in erasure::statements(&self.dialect()) {
            sqlx::query(AssertSqlSafe(statement))
                .bind(&key_text)
                .bind(&mark)
                .execute(&mut *transaction)
                .await
                .map_err(|e| self.fail(e))?;
        }
        transaction.commit().await.map_err(|e| self.fail(e))?;
        tracing::debug!(%key, "deleted a data subject's key and erased the copies of its data");
        Ok(Some(key))
    }
}
