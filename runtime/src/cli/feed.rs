//! `feed tail`: the global feed as it grows, the last events first, then new ones as they are
//! appended (woken by the store, or every 200 ms), one line or one JSON object each.

use std::time::Duration;

use super::CliError;
use super::output::{TIME_FORMAT, envelope};
use super::store::AnyStore;
use crate::store::FeedQuery;

/// Prints the events after global position `from` (default: the last 10), then follows the
/// feed unless `follow` is false, stopping after `limit` events.
pub(super) async fn tail(
    store: &AnyStore,
    from: Option<u64>,
    limit: Option<u64>,
    follow: bool,
    json: bool,
) -> Result<(), CliError> {
    let start = match from {
        Some(from) => from,
        None => store.head().await?.saturating_sub(10),
    };
    let mut position = store.feed_position_at(start).await?;
    let mut wakeups = store.wakeups();
    let mut printed = 0;
    loop {
        wakeups.mark_seen();
        let batch = store
            .read_feed(&FeedQuery::after(position).limit(500))
            .await?;
        for event in &batch.events {
            if limit.is_some_and(|limit| printed >= limit) {
                return Ok(());
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&envelope(event)).unwrap_or_default()
                );
            } else {
                println!(
                    "{:>8}  {}  {}@{}  {}  {}",
                    event.global_position,
                    event.recorded_at.format(TIME_FORMAT),
                    event.stream_id,
                    event.stream_version,
                    event.event_type,
                    event.event.as_str()
                );
            }
            printed += 1;
        }
        position = batch.next;
        if limit.is_some_and(|limit| printed >= limit) {
            return Ok(());
        }
        if batch.events.is_empty() {
            if !follow {
                return Ok(());
            }
            tokio::select! {
                () = wakeups.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}
