//! The cluster a store lives on, and the offset of its transaction ids.
//!
//! Feed positions are transaction ids, which only grow within one cluster's history. The store
//! records its cluster's `system_identifier` (migration 0009); a dump restored into another
//! cluster, or a logical-replication copy, carries that row along and so names the old cluster.
//! Every append and feed read asks `feed_tx_offset()` (a SQL function of the migration) in the
//! same statement: it refuses, with SQLSTATE `FA002`, a store whose recorded cluster is not this
//! one or that holds an event newer than any transaction of this cluster, and otherwise returns
//! the offset added to this cluster's ids to make stored ones ([`stored_xid`]).
//!
//! [`PostgresStore::adopt_cluster`] records the new cluster and raises the offset so that every
//! transaction from then on is stored after every stored event and checkpoint: a reader that
//! continues from an old checkpoint sees each new event once, after every old one.

use sqlx::{AssertSqlSafe, Row as _};

use super::{PostgresStore, Schema};
use crate::error::{Error, Result};
use crate::store::backend::columns;

/// The SQLSTATE `feed_tx_offset()` raises when the store is on another cluster.
const CLUSTER_CHANGED: &str = "FA002";

/// Added to the offset an adoption computes: feed positions saved outside the store by builds
/// before this one could run ahead of the newest event (to the horizon); this many transaction
/// ids of room cover them.
const ADOPTION_MARGIN: u64 = 1_000_000;

/// `xid` (an `xid8` expression of this cluster) as a stored transaction id: plus the store's
/// offset, as an `xid8`. Evaluated once per statement (a scalar subquery), and an error when the
/// store is on another cluster. The offset the session's first check found is kept in a
/// session setting and read first (a session never changes clusters).
pub(super) fn stored_xid(schema: &Schema, xid: &str) -> String {
    let (s, name) = (schema.quoted(), schema.name());
    format!(
        "(({xid})::text::bigint
          + coalesce(nullif(current_setting('factum.tx_offset_{name}', true), '')::bigint,
                     (SELECT {s}.feed_tx_offset())))::text::xid8"
    )
}

/// [`Error::ClusterChanged`], when `error` is `feed_tx_offset()` refusing.
pub(super) fn cluster_changed(schema: &Schema, error: &sqlx::Error) -> Option<Error> {
    let database = error.as_database_error()?;
    if database.code().as_deref() != Some(CLUSTER_CHANGED) {
        return None;
    }
    // The detail reads `recorded <id> current <id>` (either may be empty).
    let detail = database
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|e| e.detail())
        .unwrap_or_default();
    let mut words = detail.split_whitespace();
    let mut id_after = |label: &str| {
        words
            .by_ref()
            .skip_while(|word| *word != label)
            .nth(1)
            .and_then(|id| id.parse::<i64>().ok())
            .map(i64::cast_unsigned)
    };
    let recorded = id_after("recorded");
    let current = id_after("current");
    Some(Error::ClusterChanged {
        schema: schema.name().to_owned(),
        recorded,
        current,
    })
}

/// What [`PostgresStore::adopt_cluster`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterAdoption {
    /// The cluster the store recorded before (`None`: it recorded none).
    pub previous: Option<u64>,
    /// The cluster it records now: the one it is on.
    pub system_identifier: u64,
    /// The offset added to this cluster's transaction ids to store them.
    pub tx_offset: u64,
    /// Whether anything changed: `false` when the store was already at home on this cluster.
    pub adopted: bool,
}

impl PostgresStore {
    /// Adopts the cluster the store is on, after a restore into another cluster or a
    /// logical-replication move: records this cluster's identity and the offset added to its
    /// transaction ids from now on, so that every new event is stored after every stored event
    /// and checkpoint. A reader continuing from an old checkpoint then sees each new event once,
    /// after every old one. Until then reads of the feed and appends fail with
    /// [`Error::ClusterChanged`].
    ///
    /// Run it once, as the role that migrates the store (it writes the identity table), with the
    /// application's appends stopped; it does nothing on a store already at home. The
    /// command line does the same: `factum adopt-cluster --database-url <url>`.
    ///
    /// ```no_run
    /// # async fn run() -> factum::Result<()> {
    /// use factum::store::PostgresStore;
    ///
    /// let store = PostgresStore::connect("postgres://postgres@new-cluster/bank").await?;
    /// let adoption = store.adopt_cluster().await?;
    /// println!("now on cluster {}, offset {}", adoption.system_identifier, adoption.tx_offset);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NotMigrated`] when the store is not migrated (or older than migration 9: run
    /// `migrate()` first), or a database error.
    pub async fn adopt_cluster(&self) -> Result<ClusterAdoption> {
        let schema = &self.inner.schema;
        let s = schema.quoted();
        let mut transaction = self.inner.pool.begin().await.map_err(|e| self.fail(e))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('factum.adopt_cluster'), hashtext($1))")
            .bind(schema.name())
            .execute(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
        // One statement, one snapshot: every transaction that may still append has an id at or
        // above this snapshot's oldest running one.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT (SELECT c.system_identifier FROM pg_control_system() c),
                    i.system_identifier, coalesce(i.tx_offset, 0),
                    greatest((SELECT max(e.tx)::text::bigint FROM {s}.events e),
                             (SELECT max(c.tx) FROM {s}.projection_checkpoints c)),
                    pg_snapshot_xmin(pg_current_snapshot())::text::bigint
             FROM (SELECT 1) AS one
             LEFT JOIN {s}.cluster_identity i ON true"
        )))
        .fetch_one(&mut *transaction)
        .await
        .map_err(|e| self.fail(e))?;
        let current = row.try_get::<i64, _>(0).map_err(|e| self.fail(e))?;
        let previous = row.try_get::<Option<i64>, _>(1).map_err(|e| self.fail(e))?;
        let offset: u64 = columns::unsigned::<_, i64, _>(&row, 2)?;
        let newest: Option<u64> = columns::unsigned_opt::<_, i64, _>(&row, 3)?;
        let oldest_running: u64 = columns::unsigned::<_, i64, _>(&row, 4)?;
        let at_home = previous == Some(current)
            && newest.is_none_or(|newest| newest < oldest_running.saturating_add(offset));
        let adoption = if at_home {
            ClusterAdoption {
                previous: previous.map(i64::cast_unsigned),
                system_identifier: current.cast_unsigned(),
                tx_offset: offset,
                adopted: false,
            }
        } else {
            // The first stored id from now on is newest + 1 + margin; the offset never shrinks.
            let needed = newest
                .unwrap_or(0)
                .saturating_add(1 + ADOPTION_MARGIN)
                .saturating_sub(oldest_running);
            let tx_offset = offset.max(needed);
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {s}.cluster_identity AS i (singleton, system_identifier, tx_offset)
                 VALUES (true, $1, $2)
                 ON CONFLICT (singleton) DO UPDATE
                     SET system_identifier = excluded.system_identifier,
                         tx_offset = excluded.tx_offset, recorded_at = now()"
            )))
            .bind(current)
            .bind(i64::try_from(tx_offset).map_err(|_| Error::Corrupt {
                reason: format!("the transaction id offset {tx_offset} exceeds a bigint"),
            })?)
            .execute(&mut *transaction)
            .await
            .map_err(|e| self.fail(e))?;
            tracing::warn!(
                schema = schema.name(),
                previous,
                current,
                tx_offset,
                newest_tx = newest,
                "the event store adopted this PostgreSQL cluster"
            );
            ClusterAdoption {
                previous: previous.map(i64::cast_unsigned),
                system_identifier: current.cast_unsigned(),
                tx_offset,
                adopted: true,
            }
        };
        transaction.commit().await.map_err(|e| self.fail(e))?;
        Ok(adoption)
    }
}
