//! Blue/green rebuilds. Bumping a projection's version (`#[projection(version = 2)]`) makes a
//! new projection beside the old one: its own checkpoint and (named by the user) its own
//! tables. Started while version 1 is active, version 2 registers as *building*: it replays the
//! history from the start, with side-effect handlers off, while version 1 keeps serving and
//! following; when version 2 has caught up it switches over in one transaction (it becomes
//! *active*, version 1 *retired*), and version 1's runner stops by itself. Readers ask
//! [`active_version`] which tables to read.

use super::Projection;
use super::runner::ProjectionRunner;
use super::status::VersionState;
use crate::error::Error;
use crate::store::SqlStore;
use crate::store::backend::columns;

/// The active version of a projection (`None`: none registered yet), for readers choosing
/// which version's tables to read.
///
/// # Errors
/// A store error.
pub async fn active_version<S: SqlStore>(
    store: &S,
    projection: &str,
) -> Result<Option<u32>, Error> {
    let sql = super::statements(&store.dialect());
    let mut connection = store.acquire().await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(sql.active_version))
        .bind(&*store.bookkeeping_name(projection))
        .fetch_optional(&mut connection.tx())
        .await
        .map_err(|e| store.fail(e))?;
    row.map(|row| columns::unsigned::<_, i64, _>(&row, 0))
        .transpose()
}

fn state(text: &str) -> Result<VersionState, Error> {
    VersionState::parse(text).ok_or_else(|| Error::Corrupt {
        reason: format!("`{text}` is stored as a projection version's state"),
    })
}

impl<S: SqlStore, P: Projection> ProjectionRunner<S, P> {
    /// Registers this version: active when no version is; building beside an older active
    /// version (this runner then replays: side effects off); retired when a newer version is
    /// active. A registered version keeps its state. [`ProjectionRunner::run`] registers first.
    ///
    /// # Errors
    /// A store error.
    pub async fn register(&mut self) -> Result<VersionState, Error> {
        let mut transaction = self.store.begin().await?;
        let mut tx = transaction.tx();
        self.execute(&mut tx, self.statement(&self.sql.lock_versions))
            .await?;
        let rows = self
            .fetch_all(&mut tx, self.statement(&self.sql.versions))
            .await?;
        let mut mine = None;
        let mut active = None;
        for row in &rows {
            let version: u32 = columns::unsigned::<_, i64, _>(row, 0)?;
            let state = state(&columns::get::<_, String>(row, 1)?)?;
            if version == P::VERSION {
                mine = Some(state);
            }
            if state == VersionState::Active {
                active = Some(version);
            }
        }
        let state = match (mine, active) {
            (Some(state), _) => state,
            (None, None) => VersionState::Active,
            (None, Some(active)) if active < P::VERSION => VersionState::Building,
            (None, Some(_)) => VersionState::Retired,
        };
        if mine.is_none() {
            self.execute(
                &mut tx,
                self.statement(&self.sql.register_version)
                    .bind(state.as_str())
                    .bind(i64::from(state == VersionState::Active)),
            )
            .await?;
        }
        transaction.commit().await?;
        self.replaying = state == VersionState::Building;
        Ok(state)
    }

    /// This version's registered state (`None`: not registered).
    ///
    /// # Errors
    /// A store error.
    pub async fn version_state(&self) -> Result<Option<VersionState>, Error> {
        let mut connection = self.store.acquire().await?;
        let row = self
            .fetch_optional(
                &mut connection.tx(),
                self.statement(&self.sql.version_state),
            )
            .await?;
        row.map(|row| state(&columns::get::<_, String>(&row, 0)?))
            .transpose()
    }

    /// Makes this (building) version the active one and retires the previous one, in one
    /// transaction. Returns whether it switched (not when this version is no longer building).
    pub(super) async fn switch_over(&self) -> Result<bool, Error> {
        let mut transaction = self.store.begin().await?;
        let mut tx = transaction.tx();
        self.execute(&mut tx, self.statement(&self.sql.lock_versions))
            .await?;
        let retired = self
            .execute(&mut tx, self.statement(&self.sql.retire_active))
            .await?;
        let activated = self
            .execute(&mut tx, self.statement(&self.sql.activate))
            .await?;
        transaction.commit().await?;
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
