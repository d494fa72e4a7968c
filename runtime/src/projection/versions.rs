//! Blue/green rebuilds. Bumping a projection's version (`#[projection(version = 2)]`) makes a
//! new projection beside the old one: its own checkpoint and (named by the user) its own
//! tables. Started while version 1 is active, version 2 registers as *building*: it replays the
//! history from the start, with side-effect handlers off, while version 1 keeps serving and
//! following; when version 2 has caught up it switches over in one transaction (it becomes
//! *active*, version 1 *retired*), and version 1's runner stops by itself. Readers ask
//! [`active_version`] which tables to read.

use sqlx::{AssertSqlSafe, PgConnection, Row as _};

use super::runner::version;
use super::status::VersionState;
use super::{Projection, ProjectionRunner};
use crate::error::Error;
use crate::store::PostgresStore;

/// The active version of a projection (`None`: none registered yet), for readers choosing
/// which version's tables to read.
///
/// # Errors
/// A store error.
pub async fn active_version(store: &PostgresStore, projection: &str) -> Result<Option<u32>, Error> {
    let sql = format!(
        "SELECT version FROM \"{}\".projection_versions WHERE projection = $1 AND state = 'active'",
        store.schema()
    );
    let active: Option<i32> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(projection)
        .fetch_optional(store.pool())
        .await
        .map_err(|e| Error::Backend(Box::new(e)))?;
    Ok(active.and_then(|v| u32::try_from(v).ok()))
}

impl<P: Projection<Connection = PgConnection>> ProjectionRunner<P> {
    /// Registers this version: active when no version is; building beside an older active
    /// version (this runner then replays: side effects off); retired when a newer version is
    /// active. A registered version keeps its state. [`ProjectionRunner::run`] registers first.
    ///
    /// # Errors
    /// A store error.
    pub async fn register(&mut self) -> Result<VersionState, Error> {
        let s = format!("\"{}\"", self.store().schema());
        let mut transaction = self
            .store()
            .pool()
            .begin()
            .await
            .map_err(|e| self.fail(e))?;
        lock_versions::<P>(&mut transaction)
            .await
            .map_err(|e| self.fail(e))?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT version, state FROM {s}.projection_versions WHERE projection = $1"
        )))
        .bind(P::NAME)
        .fetch_all(&mut *transaction)
        .await
        .map_err(|e| self.fail(e))?;
        let mut mine = None;
        let mut active = None;
        for row in &rows {
            let (v, state): (i32, String) = (
                row.try_get(0).map_err(|e| self.fail(e))?,
                row.try_get(1).map_err(|e| self.fail(e))?,
            );
            let state = VersionState::parse(&state).ok_or_else(|| {
                Error::Backend(format!("unknown projection state `{state}`").into())
            })?;
            if v == version(P::VERSION) {
                mine = Some(state);
            }
            if state == VersionState::Active {
                active = Some(v);
            }
        }
        let state = match (mine, active) {
            (Some(state), _) => state,
            (None, None) => VersionState::Active,
            (None, Some(active)) if active < version(P::VERSION) => VersionState::Building,
            (None, Some(_)) => VersionState::Retired,
        };
        if mine.is_none() {
            let activated = if state == VersionState::Active {
                "now()"
            } else {
                "NULL"
            };
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {s}.projection_versions (projection, version, state, activated_at)
                 VALUES ($1, $2, $3, {activated})"
            )))
            .bind(P::NAME)
            .bind(version(P::VERSION))
            .bind(state.as_str())
            .execute(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        }
        transaction.commit().await.map_err(|e| self.fail(e))?;
        self.set_replaying(state == VersionState::Building);
        Ok(state)
    }

    /// This version's registered state (`None`: not registered).
    ///
    /// # Errors
    /// A store error.
    pub async fn version_state(&self) -> Result<Option<VersionState>, Error> {
        let state: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT state FROM \"{}\".projection_versions WHERE projection = $1 AND version = $2",
            self.store().schema()
        )))
        .bind(P::NAME)
        .bind(version(P::VERSION))
        .fetch_optional(self.store().pool())
        .await
        .map_err(|e| self.fail(e))?;
        Ok(state.as_deref().and_then(VersionState::parse))
    }

    /// Makes this (building) version the active one and retires the previous one, in one
    /// transaction. Returns whether it switched (not when this version is no longer building).
    ///
    /// # Errors
    /// A store error.
    pub(super) async fn switch_over(&self) -> Result<bool, Error> {
        let s = format!("\"{}\"", self.store().schema());
        let mut transaction = self
            .store()
            .pool()
            .begin()
            .await
            .map_err(|e| self.fail(e))?;
        lock_versions::<P>(&mut transaction)
            .await
            .map_err(|e| self.fail(e))?;
        let retired = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {s}.projection_versions SET state = 'retired', retired_at = now()
             WHERE projection = $1 AND state = 'active'
               AND EXISTS (SELECT 1 FROM {s}.projection_versions
                           WHERE projection = $1 AND version = $2 AND state = 'building')"
        )))
        .bind(P::NAME)
        .bind(version(P::VERSION))
        .execute(&mut *transaction)
        .await
        .map_err(|e| self.fail(e))?;
        let activated = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {s}.projection_versions SET state = 'active', activated_at = now()
             WHERE projection = $1 AND version = $2 AND state = 'building'"
        )))
        .bind(P::NAME)
        .bind(version(P::VERSION))
        .execute(&mut *transaction)
        .await
        .map_err(|e| self.fail(e))?;
        transaction.commit().await.map_err(|e| self.fail(e))?;
        let switched = activated.rows_affected() == 1;
        if switched {
            tracing::info!(
                projection = P::NAME,
                version = P::VERSION,
                retired = retired.rows_affected(),
                "projection version caught up and switched over"
            );
        }
        Ok(switched)
    }
}

/// Serializes changes to a projection's versions (a transaction-scoped advisory lock).
async fn lock_versions<P: Projection>(transaction: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('factum.projection_versions'), hashtext($1))",
    )
    .bind(P::NAME)
    .execute(&mut *transaction)
    .await?;
    Ok(())
}
