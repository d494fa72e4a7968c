//! `archive`: moves old events into the cold tier's Parquet files (`archive run`), lists the
//! archives (`archive list`) and puts one back (`archive restore`); PostgreSQL stores, as the
//! schema's owner (see `factum::archive`).

use std::path::Path;

use chrono::{DateTime, Utc};

use super::CliError;
use super::args::ArchiveCommand;
use super::output::print_json;
use super::store::AnyStore;
use crate::archive::{ArchiveFile, ArchiveOptions};
use crate::store::PostgresStore;

/// Runs an `archive` subcommand.
pub(super) async fn run(
    store: &AnyStore,
    command: &ArchiveCommand,
    json: bool,
) -> Result<(), CliError> {
    let AnyStore::Postgres(postgres) = store else {
        return Err(CliError::Usage(
            "archive is for PostgreSQL stores: a SQLite store has no cold tier yet".to_owned(),
        ));
    };
    match command {
        ArchiveCommand::Run {
            before,
            dir,
            events_per_file,
        } => archive(postgres, *before, dir, *events_per_file, json).await,
        ArchiveCommand::List => list(postgres, json).await,
        ArchiveCommand::Restore { id } => restore(postgres, *id, json).await,
    }
}

async fn archive(
    store: &PostgresStore,
    before: DateTime<Utc>,
    dir: &Path,
    events_per_file: usize,
    json: bool,
) -> Result<(), CliError> {
    let options = ArchiveOptions::new(dir, before).events_per_file(events_per_file);
    let report = store.archive(&options).await?;
    if json {
        print_json(&serde_json::json!({
            "events": report.events,
            "streams": report.streams,
            "files": report.files.iter().map(file_json).collect::<Vec<_>>(),
        }));
    } else if report.files.is_empty() {
        println!(
            "nothing recorded before {before} to archive (each stream keeps its newest event)"
        );
    } else {
        for file in &report.files {
            println!(
                "archive {}: {} events, {} bytes -> {}",
                file.id,
                file.events,
                file.bytes,
                file.file.display()
            );
        }
        println!(
            "{} events of {} streams archived in {} files",
            report.events,
            report.streams,
            report.files.len()
        );
    }
    Ok(())
}

async fn list(store: &PostgresStore, json: bool) -> Result<(), CliError> {
    let archives = store.archives().await?;
    if json {
        print_json(&serde_json::json!(
            archives.iter().map(file_json).collect::<Vec<_>>()
        ));
        return Ok(());
    }
    if archives.is_empty() {
        println!("no archives: every event is in the table");
    }
    for file in &archives {
        println!(
            "{:>6}  {:>10} events  {:>12} bytes  before {}  archived {}  {}",
            file.id,
            file.events,
            file.bytes,
            file.before.to_rfc3339(),
            file.archived_at.to_rfc3339(),
            file.file.display()
        );
    }
    Ok(())
}

async fn restore(store: &PostgresStore, id: i64, json: bool) -> Result<(), CliError> {
    let restored = store.restore(id).await?;
    if json {
        print_json(&serde_json::json!({ "archive": id, "restored": restored }));
    } else {
        println!("archive {id}: {restored} events back in the table, its file removed");
    }
    Ok(())
}

fn file_json(file: &ArchiveFile) -> serde_json::Value {
    serde_json::json!({
        "id": file.id,
        "file": file.file,
        "events": file.events,
        "bytes": file.bytes,
        "before": file.before,
        "archived_at": file.archived_at,
    })
}
