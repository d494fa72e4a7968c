//! The store at a glance: `projections status` (each projection's checkpoint, lag and parked
//! streams) and `stats` (events, streams, the largest streams, events per type, the size).

use super::CliError;
use super::output::{Table, print_json, print_list};
use super::store::AnyStore;

/// `projections status`: every projection's checkpoint (or only `name`'s).
pub(super) async fn projections(
    store: &AnyStore,
    name: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let mut checkpoints = store.checkpoints().await?;
    if let Some(name) = name {
        let known: Vec<String> = checkpoints.iter().map(|c| c.projection.clone()).collect();
        checkpoints.retain(|c| c.projection == name);
        if checkpoints.is_empty() {
            return Err(CliError::UnknownProjection {
                name: name.to_owned(),
                known: if known.is_empty() {
                    "none has run yet".to_owned()
                } else {
                    known.join(", ")
                },
            });
        }
    }
    print_list(
        &checkpoints,
        json,
        &format!("no projection has run on {} yet", store.describe()),
        &[
            "PROJECTION",
            "VERSION",
            "CHECKPOINT",
            "HEAD",
            "EVENTS AFTER",
            "PARKED STREAMS",
            "PARKED EVENTS",
        ],
        |c| {
            vec![
                c.projection.clone(),
                c.version.to_string(),
                if c.position >= c.head {
                    format!("{} (caught up)", c.head)
                } else {
                    c.position.to_string()
                },
                c.head.to_string(),
                c.events_after.to_string(),
                c.parked_streams.to_string(),
                c.parked_events.to_string(),
            ]
        },
    );
    Ok(())
}

/// `stats`: the store's counts, its `largest` streams and its events per type.
pub(super) async fn stats(store: &AnyStore, largest: usize, json: bool) -> Result<(), CliError> {
    let stats = store.stats(largest).await?;
    if json {
        print_json(&stats);
        return Ok(());
    }
    println!("store: {}", store.describe());
    println!("events: {}", stats.events);
    println!("streams: {}", stats.streams);
    println!("size: {} bytes", stats.size_bytes);
    println!("\nlargest streams:");
    let mut table = Table::new(&["STREAM", "EVENTS"]);
    for (stream, events) in &stats.largest_streams {
        table.row(vec![stream.clone(), events.to_string()]);
    }
    print!("{}", table.render());
    println!("\nevents per type:");
    let mut table = Table::new(&["TYPE", "EVENTS"]);
    for (event_type, events) in &stats.events_per_type {
        table.row(vec![event_type.clone(), events.to_string()]);
    }
    print!("{}", table.render());
    Ok(())
}
