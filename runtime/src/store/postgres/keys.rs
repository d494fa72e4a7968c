//! The PostgreSQL store's data keys ([`KeyTable`]) and what it does with them: forgetting a data
//! subject.

use sqlx::{AssertSqlSafe, Row as _};
use uuid::Uuid;

use super::PostgresStore;
use crate::error::{Error, Result};
use crate::pii::KeyProvider;
use crate::store::keys::KeyTable;

impl PostgresStore {
    /// This store (sharing its pool) sealing the `#[pii]` fields of the events it appends
    /// under data keys wrapped by `provider`, and opening them in everything it reads (see
    /// [`crate::pii`]). Without one, an event with personal data is refused.
    #[must_use]
    pub fn with_key_provider(self, provider: impl KeyProvider) -> Self {
        crate::store::sql::Backend::with_provider(self, std::sync::Arc::new(provider))
    }

    /// Forgets a data subject (crypto-shredding): deletes its data key, so that the `#[pii]`
    /// fields of its events read as their replacements from now on, here at once and in other
    /// processes within 30 s, and their envelopes are marked
    /// [`shredded`](crate::envelope::Envelope::shredded). The log itself is not changed.
    /// Whether the subject had a key.
    ///
    /// # Errors
    /// A database error; [`Error::InvalidConfig`] when the store has no key provider.
    pub async fn forget(&self, subject: &str) -> Result<bool> {
        let keys = self.keys.as_ref().ok_or_else(|| {
            Error::InvalidConfig(
                "forgetting a data subject needs the store's key provider: `with_key_provider(...)`"
                    .to_owned(),
            )
        })?;
        let forgotten = keys.forget(self, subject).await?;
        tracing::info!(forgotten, "forgot a data subject");
        Ok(forgotten)
    }

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
    async fn wrapped_keys(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, Vec<u8>)>> {
        let rows =
            sqlx::query(self.keys_sql(
                "SELECT key_id, wrapped_key FROM {schema}.data_keys WHERE key_id = ANY($1)",
            ))
            .bind(ids)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| self.fail(e))?;
        rows.iter().map(key_row).collect()
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
        loop {
            let row = sqlx::query(self.keys_sql(
                "WITH new AS (
                 INSERT INTO {schema}.data_keys (key_id, subject, wrapped_key)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (subject) DO NOTHING
                 RETURNING key_id, wrapped_key
             )
             SELECT key_id, wrapped_key FROM new
             UNION ALL
             SELECT key_id, wrapped_key FROM {schema}.data_keys WHERE subject = $2
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

    async fn delete_subject_key(&self, subject: &str) -> Result<bool> {
        let deleted =
            sqlx::query(self.keys_sql("DELETE FROM {schema}.data_keys WHERE subject = $1"))
                .bind(subject)
                .execute(&self.inner.pool)
                .await
                .map_err(|e| self.fail(e))?;
        Ok(deleted.rows_affected() > 0)
    }
}
