//! `catalog check`, the schema lock for CI: compares the event catalog registered in the tool
//! with the one written to its directory. Fails when a published event version changed
//! incompatibly, or when the written files are not what the code generates. With `--consumer`,
//! also checks consumers' contracts (`factum::catalog::ConsumerContract`): against the
//! registered catalog (the producer's CI), or against a written catalog directory when none is
//! registered (the consumer's CI). Needs no store.

use std::path::{Path, PathBuf};

use super::CliError;
use super::output::print_json;
use crate::catalog::{Catalog, CatalogError, ConsumerContract, Severity, published_schemas};

/// Checks the registered `catalog` against `dir` (default: its registered directory).
pub(super) fn check(
    catalog: Option<&(Catalog, PathBuf)>,
    dir: Option<&Path>,
    json: bool,
) -> Result<(), CliError> {
    let (catalog, registered) = catalog.ok_or_else(|| {
        CliError::Usage(
            "no catalog is registered in this tool: build your own with factum::cli::Cli::new().catalog(catalog, \"schemas\")".to_owned(),
        )
    })?;
    let dir = dir.unwrap_or(registered);
    let changes = match catalog.check(dir) {
        Ok(changes) => changes,
        Err(CatalogError::Breaking(breaking)) => {
            return Err(CliError::Catalog(format!(
                "published event versions changed incompatibly:\n{breaking}"
            )));
        }
        Err(error) => return Err(CliError::Catalog(error.to_string())),
    };
    let stale: Vec<String> = catalog
        .files()
        .into_iter()
        .filter(|(path, text)| {
            std::fs::read_to_string(dir.join(path)).ok().as_deref() != Some(text.as_str())
        })
        .map(|(path, _)| path.display().to_string())
        .collect();
    let unpublished: Vec<String> = changes
        .iter()
        .filter(|c| c.severity != Severity::Breaking)
        .map(|c| format!("{} v{}: {}", c.event, c.version, c.what))
        .collect();
    if json {
        print_json(&serde_json::json!({
            "dir": dir.display().to_string(),
            "events": catalog.events().count(),
            "stale_files": stale,
            "unpublished_changes": unpublished,
        }));
    }
    if stale.is_empty() {
        if !json {
            println!(
                "the catalog in {} is up to date: {} event versions, no incompatible change",
                dir.display(),
                catalog.events().count()
            );
        }
        Ok(())
    } else {
        Err(CliError::Catalog(format!(
            "the catalog in {} is stale ({}{}): run `cargo build` and commit it",
            dir.display(),
            stale.join(", "),
            if unpublished.is_empty() {
                String::new()
            } else {
                format!("; not yet published: {}", unpublished.join("; "))
            }
        )))
    }
}

/// Checks each contract file in `files` against the registered `catalog`, or, without one, the
/// catalog written in `dir`; fails naming every break.
pub(super) fn check_consumers(
    catalog: Option<&(Catalog, PathBuf)>,
    dir: Option<&Path>,
    files: &[PathBuf],
    json: bool,
) -> Result<(), CliError> {
    // The event versions to check against: the code's, or a published catalog's.
    let published;
    let schemas: Vec<(&str, u32, &serde_json::Value)> = match catalog {
        Some((catalog, _)) => catalog.event_versions().collect(),
        None => {
            let dir = dir.ok_or_else(|| {
                CliError::Usage(
                    "no catalog is registered in this tool: give the producer's catalog directory with --dir".to_owned(),
                )
            })?;
            published = published_schemas(dir).map_err(|e| CliError::Catalog(e.to_string()))?;
            published
                .iter()
                .map(|(name, version, schema)| (name.as_str(), *version, schema))
                .collect()
        }
    };
    let mut report = Vec::new();
    let mut broken = Vec::new();
    for file in files {
        let contract =
            ConsumerContract::read(file).map_err(|e| CliError::Catalog(e.to_string()))?;
        let breaks = contract.breaks(schemas.iter().copied());
        let lines: Vec<String> = breaks.iter().map(ToString::to_string).collect();
        if !json {
            if lines.is_empty() {
                println!(
                    "consumer `{}` ({}): every event, version and field it reads is there",
                    contract.consumer,
                    file.display()
                );
            } else {
                println!(
                    "consumer `{}` ({}): broken",
                    contract.consumer,
                    file.display()
                );
            }
        }
        report.push(serde_json::json!({
            "consumer": contract.consumer,
            "file": file.display().to_string(),
            "breaks": lines,
        }));
        broken.extend(breaks);
    }
    if json {
        print_json(&serde_json::json!({ "contracts": report }));
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(CliError::Catalog(
            CatalogError::ContractsBroken(broken).to_string(),
        ))
    }
}
