//! `export` and `import`: a store's events as JSON Lines, and back into an empty store (see
//! `factum::store::transfer`), with a progress bar on a terminal.

use std::io::{BufRead, BufReader, BufWriter, IsTerminal as _, Write};
use std::path::Path;

use super::CliError;
use super::output::print_json;
use super::store::AnyStore;
use crate::error::Error;
use crate::store::transfer;

/// A progress bar counting events (hidden when standard error is not a terminal).
fn bar(message: &str) -> indicatif::ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos} events ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_owned());
    bar
}

fn io(error: std::io::Error) -> CliError {
    CliError::Store(Error::Backend(error.into()))
}

/// Writes the events (of `streams`, or all) to `output` (or standard output).
pub(super) async fn export(
    store: &AnyStore,
    streams: &[String],
    output: Option<&Path>,
    json: bool,
) -> Result<(), CliError> {
    let streams = (!streams.is_empty()).then_some(streams);
    let bar = bar("exporting");
    let progress = |n| bar.set_position(n);
    let out: Box<dyn Write> = match output {
        Some(path) => Box::new(BufWriter::new(std::fs::File::create(path).map_err(io)?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let written = match store {
        AnyStore::Postgres(s) => transfer::export(s, streams, out, progress).await?,
        AnyStore::Sqlite(s) => transfer::export(s, streams, out, progress).await?,
    };
    bar.finish_and_clear();
    if let Some(path) = output {
        if json {
            print_json(&serde_json::json!({ "exported": written, "file": path }));
        } else {
            println!("{written} events exported to {}", path.display());
        }
    }
    Ok(())
}

/// Loads `input` (or standard input) into the store.
pub(super) async fn import(
    store: &AnyStore,
    input: Option<&Path>,
    json: bool,
) -> Result<(), CliError> {
    let bar = bar("importing");
    let progress = |n| bar.set_position(n);
    let input: Box<dyn BufRead> = match input {
        Some(path) => Box::new(BufReader::new(std::fs::File::open(path).map_err(io)?)),
        None => Box::new(std::io::stdin().lock()),
    };
    let imported = match store {
        AnyStore::Postgres(s) => s.import(input, progress).await?,
        AnyStore::Sqlite(s) => s.import(input, progress).await?,
    };
    bar.finish_and_clear();
    if json {
        print_json(&serde_json::json!({ "imported": imported }));
    } else {
        println!("{imported} events imported into {}", store.describe());
    }
    Ok(())
}
