//! The store's schema, as versioned migrations shipped in the crate and applied on demand.
//!
//! Migrations run in one transaction under an advisory lock, so concurrent `migrate()` calls
//! (several instances starting at once) apply each migration exactly once. Applied migrations
//! are recorded with a checksum; a database migrated by a newer build, or whose recorded
//! migration differs from this build's, is refused rather than guessed at.

use sqlx::{AssertSqlSafe, PgPool};

use super::{Schema, db_error};
use crate::error::Result;
use crate::store::migration::{Migration, checksum, pending};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_store",
        sql: include_str!("../../../migrations/postgres/0001_event_store.sql"),
    },
    Migration {
        version: 2,
        name: "projections",
        sql: include_str!("../../../migrations/postgres/0002_projections.sql"),
    },
    Migration {
        version: 3,
        name: "dead_letters",
        sql: include_str!("../../../migrations/postgres/0003_dead_letters.sql"),
    },
    Migration {
        version: 4,
        name: "projection_versions",
        sql: include_str!("../../../migrations/postgres/0004_projection_versions.sql"),
    },
    Migration {
        version: 5,
        name: "inline_projections",
        sql: include_str!("../../../migrations/postgres/0005_inline_projections.sql"),
    },
    Migration {
        version: 6,
        name: "sagas",
        sql: include_str!("../../../migrations/postgres/0006_sagas.sql"),
    },
    Migration {
        version: 7,
        name: "lease_tokens",
        sql: include_str!("../../../migrations/postgres/0007_lease_tokens.sql"),
    },
    Migration {
        version: 8,
        name: "deferred_side_effects",
        sql: include_str!("../../../migrations/postgres/0008_deferred_side_effects.sql"),
    },
    Migration {
        version: 9,
        name: "cluster_identity",
        sql: include_str!("../../../migrations/postgres/0009_cluster_identity.sql"),
    },
    Migration {
        version: 10,
        name: "parked_count",
        sql: include_str!("../../../migrations/postgres/0010_parked_count.sql"),
    },
    Migration {
        version: 11,
        name: "relays",
        sql: include_str!("../../../migrations/postgres/0011_relays.sql"),
    },
    Migration {
        version: 12,
        name: "consumers",
        sql: include_str!("../../../migrations/postgres/0012_consumers.sql"),
    },
    Migration {
        version: 13,
        name: "relay_retries",
        sql: include_str!("../../../migrations/postgres/0013_relay_retries.sql"),
    },
    Migration {
        version: 14,
        name: "data_keys",
        sql: include_str!("../../../migrations/postgres/0014_data_keys.sql"),
    },
    Migration {
        version: 15,
        name: "erasure",
        sql: include_str!("../../../migrations/postgres/0015_erasure.sql"),
    },
    Migration {
        version: 16,
        name: "tenants",
        sql: include_str!("../../../migrations/postgres/0016_tenants.sql"),
    },
    Migration {
        version: 17,
        name: "tenant_bookkeeping",
        sql: include_str!("../../../migrations/postgres/0017_tenant_bookkeeping.sql"),
    },
    Migration {
        version: 18,
        name: "tenant_data_keys",
        sql: include_str!("../../../migrations/postgres/0018_tenant_data_keys.sql"),
    },
    Migration {
        version: 19,
        name: "tenant_consumers",
        sql: include_str!("../../../migrations/postgres/0019_tenant_consumers.sql"),
    },
    Migration {
        version: 20,
        name: "outbox_trace",
        sql: include_str!("../../../migrations/postgres/0020_outbox_trace.sql"),
    },
    Migration {
        version: 21,
        name: "tenant_feed_index",
        sql: include_str!("../../../migrations/postgres/0021_tenant_feed_index.sql"),
    },
    Migration {
        version: 22,
        name: "archives",
        sql: include_str!("../../../migrations/postgres/0022_archives.sql"),
    },
    Migration {
        version: 23,
        name: "data_keys_by_subject",
        sql: include_str!("../../../migrations/postgres/0023_data_keys_by_subject.sql"),
    },
    Migration {
        version: 24,
        name: "sealed_column",
        sql: include_str!("../../../migrations/postgres/0024_sealed_column.sql"),
    },
];

pub(super) async fn migrate(pool: &PgPool, schema: &Schema) -> Result<()> {
    let mut tx = pool.begin().await.map_err(|e| db_error(schema, e))?;
    match apply(&mut tx, schema).await {
        Ok(()) => tx.commit().await.map_err(|e| db_error(schema, e)),
        Err(error) => {
            // Roll back now rather than when the connection is next used: the transaction holds
            // locks on the schema until it ends.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(%rollback, "could not roll back a failed migration");
            }
            Err(error)
        }
    }
}

async fn apply(tx: &mut sqlx::PgConnection, schema: &Schema) -> Result<()> {
    let fail = |error| db_error(schema, error);
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('factum.migrate'), hashtext($1))")
        .bind(schema.name())
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    let q = schema.quoted();
    // Up to date: nothing to create, which an application role without DDL rights needs.
    let ledger: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(format!("{q}.factum_migrations"))
        .fetch_one(&mut *tx)
        .await
        .map_err(fail)?;
    if ledger.is_some() {
        let applied: Vec<(i32, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT version, checksum FROM {q}.factum_migrations ORDER BY version"
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
        if pending(MIGRATIONS, &applied, schema.name())?.is_empty() {
            return Ok(());
        }
    }
    // A schema that exists (made by an administrator for an owner role, say) is not created
    // again: creating one, even `IF NOT EXISTS`, needs the right to create schemas.
    let schema_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema.name())
            .fetch_one(&mut *tx)
            .await
            .map_err(fail)?;
    if !schema_exists {
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {q}")))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
    }
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {q}.factum_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             checksum   text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    )))
    .execute(&mut *tx)
    .await
    .map_err(fail)?;

    let applied: Vec<(i32, String)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT version, checksum FROM {q}.factum_migrations ORDER BY version"
    )))
    .fetch_all(&mut *tx)
    .await
    .map_err(fail)?;
    for migration in pending(MIGRATIONS, &applied, schema.name())? {
        tracing::info!(
            schema = schema.name(),
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        // `{schema}`: the quoted identifier; `{schema_name}`: the plain name (a lowercase
        // identifier, checked by `Schema`), for literals.
        let sql = migration
            .sql
            .replace("{schema}", q)
            .replace("{schema_name}", schema.name());
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {q}.factum_migrations (version, name, checksum) VALUES ($1, $2, $3)"
        )))
        .bind(migration.version)
        .bind(migration.name)
        .bind(checksum(migration.sql))
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    }
    Ok(())
}
