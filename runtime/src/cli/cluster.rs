//! `adopt-cluster`: a PostgreSQL store restored into another cluster (or moved by logical
//! replication) adopts it, so that its feed continues after every stored event (see
//! `PostgresStore::adopt_cluster`).

use super::CliError;
use super::output::print_json;
use super::store::AnyStore;

/// Adopts the cluster the store is on and says what changed.
pub(super) async fn adopt(store: &AnyStore, json: bool) -> Result<(), CliError> {
    let AnyStore::Postgres(postgres) = store else {
        return Err(CliError::Usage(
            "adopt-cluster is for PostgreSQL stores: a SQLite store is a file, its own identity"
                .to_owned(),
        ));
    };
    let adoption = postgres.adopt_cluster().await?;
    if json {
        print_json(&serde_json::json!({
            "adopted": adoption.adopted,
            "previous": adoption.previous,
            "system_identifier": adoption.system_identifier,
            "tx_offset": adoption.tx_offset,
        }));
    } else if adoption.adopted {
        let previous = adoption
            .previous
            .map_or_else(|| "none".to_owned(), |id| id.to_string());
        println!(
            "{} adopted cluster {} (it recorded {previous}); transaction ids are stored with offset {}: restart the applications",
            store.describe(),
            adoption.system_identifier,
            adoption.tx_offset
        );
    } else {
        println!(
            "{} is already at home on cluster {} (offset {}): nothing to do",
            store.describe(),
            adoption.system_identifier,
            adoption.tx_offset
        );
    }
    Ok(())
}
