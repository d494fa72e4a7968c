//! The dead-letter queue: `dlq list` (the parked streams of every projection), and `dlq retry`
//! and `dlq skip`, which act on one parked stream of a projection registered in the tool.

use super::CliError;
use super::output::{print_json, print_list};
use super::projections::Registered;
use super::store::AnyStore;
use crate::projection::RetryOutcome;

/// `dlq list`: the parked streams of every projection.
pub(super) async fn list(store: &AnyStore, json: bool) -> Result<(), CliError> {
    let parked = store.parked().await?;
    print_list(
        &parked,
        json,
        "no parked streams",
        &[
            "PROJECTION",
            "VERSION",
            "STREAM",
            "FROM VERSION",
            "EVENTS",
            "ERROR",
        ],
        |p| {
            vec![
                p.projection.clone(),
                p.version.to_string(),
                p.stream_id.clone(),
                p.first_version.to_string(),
                p.events.to_string(),
                p.error.clone().unwrap_or_default(),
            ]
        },
    );
    Ok(())
}

/// `dlq retry`: handles `stream`'s parked events again, in order; an error if it stops again.
pub(super) async fn retry(
    projection: &dyn Registered,
    store: &AnyStore,
    stream: &str,
    json: bool,
) -> Result<(), CliError> {
    match projection.retry(store, stream).await? {
        RetryOutcome::Drained { handled } => {
            if json {
                print_json(&serde_json::json!({
                    "stream_id": stream, "outcome": "drained", "handled": handled
                }));
            } else {
                println!("`{stream}` drained: {handled} events handled, the stream flows again");
            }
            Ok(())
        }
        RetryOutcome::Stopped {
            handled,
            stream_version,
            error,
            ..
        } => Err(CliError::StoppedAgain {
            stream: stream.to_owned(),
            stream_version,
            handled,
            error: error.to_string(),
        }),
    }
}

/// `dlq skip`: skips `stream`'s first parked event, kept on record.
pub(super) async fn skip(
    projection: &dyn Registered,
    store: &AnyStore,
    stream: &str,
    json: bool,
) -> Result<(), CliError> {
    let skipped = projection.skip(store, stream).await?;
    if json {
        print_json(&serde_json::json!({ "stream_id": stream, "skipped_version": skipped }));
        return Ok(());
    }
    match skipped {
        Some(version) => println!("skipped `{stream}` version {version} (kept on record)"),
        None => println!("`{stream}` is not parked"),
    }
    Ok(())
}
