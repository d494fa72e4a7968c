//! The SQLite store's tables, as versioned migrations shipped in the crate, each applied once in
//! a `BEGIN IMMEDIATE` transaction (so two processes starting at once take turns) and recorded
//! with its checksum; a database migrated by a newer build is refused.

use sqlx::{AssertSqlSafe, SqlitePool};

use super::backend;
use crate::error::Result;
use crate::store::migration::{Migration, checksum, pending};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_store",
        sql: include_str!("../../../migrations/sqlite/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        name: "projections",
        sql: include_str!("../../../migrations/sqlite/0002_projections.sql"),
    },
    Migration {
        version: 3,
        name: "sagas",
        sql: include_str!("../../../migrations/sqlite/0003_sagas.sql"),
    },
    Migration {
        version: 4,
        name: "dead_letters",
        sql: include_str!("../../../migrations/sqlite/0004_dead_letters.sql"),
    },
    Migration {
        version: 5,
        name: "file_leases",
        sql: include_str!("../../../migrations/sqlite/0005_file_leases.sql"),
    },
    Migration {
        version: 6,
        name: "projection_versions",
        sql: include_str!("../../../migrations/sqlite/0006_projection_versions.sql"),
    },
    Migration {
        version: 7,
        name: "lease_tokens",
        sql: include_str!("../../../migrations/sqlite/0007_lease_tokens.sql"),
    },
    Migration {
        version: 8,
        name: "deferred_side_effects",
        sql: include_str!("../../../migrations/sqlite/0008_deferred_side_effects.sql"),
    },
    Migration {
        version: 9,
        name: "consumers",
        sql: include_str!("../../../migrations/sqlite/0009_consumers.sql"),
    },
    Migration {
        version: 10,
        name: "data_keys",
        sql: include_str!("../../../migrations/sqlite/0010_data_keys.sql"),
    },
    Migration {
        version: 11,
        name: "erasure",
        sql: include_str!("../../../migrations/sqlite/0011_erasure.sql"),
    },
    Migration {
        version: 12,
        name: "tenants",
        sql: include_str!("../../../migrations/sqlite/0012_tenants.sql"),
    },
    Migration {
        version: 13,
        name: "outbox_trace",
        sql: include_str!("../../../migrations/sqlite/0013_outbox_trace.sql"),
    },
    Migration {
        version: 14,
        name: "data_keys_by_subject",
        sql: include_str!("../../../migrations/sqlite/0014_data_keys_by_subject.sql"),
    },
];

pub(super) async fn migrate(pool: &SqlitePool, location: &str) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS factum_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT    NOT NULL,
             checksum   TEXT    NOT NULL,
             applied_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
         )",
    )
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    let applied: Vec<(i32, String)> =
        sqlx::query_as("SELECT version, checksum FROM factum_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
    for migration in pending(MIGRATIONS, &applied, location)? {
        tracing::info!(
            database = location,
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        sqlx::raw_sql(AssertSqlSafe(migration.sql))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO factum_migrations (version, name, checksum) VALUES (?1, ?2, ?3)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(checksum(migration.sql))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
}
