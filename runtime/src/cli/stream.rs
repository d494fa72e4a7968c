//! `stream show` and `state`: a stream's events with their envelopes, and the state of its
//! aggregate replayed from them (after each event, or at a version or a time) when the
//! aggregate type is registered in the tool.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::CliError;
use super::output::{TIME_FORMAT, Table, envelope, print_json};
use super::store::AnyStore;
use crate::aggregate::Aggregate;
use crate::error::Error;
use crate::store::StreamEvent;

/// Replays a stream of one aggregate type, giving the state after each event as JSON.
pub(super) type Replayer = fn(&str, &[StreamEvent]) -> Result<Vec<serde_json::Value>, Error>;

/// The registered aggregates' replayers, by aggregate type.
pub(super) type Replayers = BTreeMap<&'static str, Replayer>;

pub(super) fn replay<A: Aggregate + Serialize>(
    stream_id: &str,
    events: &[StreamEvent],
) -> Result<Vec<serde_json::Value>, Error> {
    let mut state = A::default();
    let mut states = Vec::with_capacity(events.len());
    for event in events {
        for decoded in event.decode::<A::Event>(stream_id)? {
            state.apply(&decoded);
        }
        states.push(serde_json::to_value(&state).map_err(|cause| Error::Encode {
            event_type: "aggregate state",
            cause,
        })?);
    }
    Ok(states)
}

/// `stream show`: every event of stream `id` with its envelope, and the state after each one
/// when its aggregate type is registered.
pub(super) async fn show(
    aggregates: &Replayers,
    store: &AnyStore,
    id: &str,
    json: bool,
) -> Result<(), CliError> {
    let events = store.read_stream(id, ..).await?;
    if events.is_empty() {
        return Err(CliError::UnknownStream(id.to_owned()));
    }
    let aggregate_type = events[0].aggregate_type.clone();
    let states = match aggregates.get(aggregate_type.as_str()) {
        Some(replay) => {
            let stream_events: Vec<StreamEvent> =
                events.iter().cloned().map(StreamEvent::from).collect();
            Some(replay(id, &stream_events)?)
        }
        None => None,
    };
    if json {
        let rows: Vec<serde_json::Value> = events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let mut row =
                    serde_json::to_value(envelope(event)).unwrap_or(serde_json::Value::Null);
                if let Some(states) = &states {
                    row["state"] = states[i].clone();
                }
                row
            })
            .collect();
        print_json(&rows);
        return Ok(());
    }
    println!(
        "stream `{id}` ({aggregate_type}): {} events{}",
        events.len(),
        if states.is_none() {
            " (state not shown: the aggregate type is not registered in this tool)"
        } else {
            ""
        }
    );
    let mut table = Table::new(&[
        "VERSION",
        "POSITION",
        "TYPE",
        "SCHEMA",
        "RECORDED AT",
        "EVENT ID",
        "CORRELATION",
        "CAUSATION",
        "ACTOR",
    ]);
    for event in &events {
        table.row(vec![
            event.stream_version.to_string(),
            event.global_position.to_string(),
            event.event_type.clone(),
            format!("v{}", event.schema_version),
            event.recorded_at.format(TIME_FORMAT).to_string(),
            event.event_id.to_string(),
            event.correlation_id.to_string(),
            event.causation_id.to_string(),
            event.actor.clone().unwrap_or_default(),
        ]);
    }
    print!("{}", table.render());
    println!();
    for (i, event) in events.iter().enumerate() {
        println!(
            "{} {}: {}",
            event.stream_version,
            event.event_type,
            event.event.as_str()
        );
        if !event.metadata.is_empty() {
            println!(
                "    metadata: {}",
                serde_json::to_string(&event.metadata).unwrap_or_default()
            );
        }
        if let Some(states) = &states {
            println!("    state after: {}", states[i]);
        }
    }
    Ok(())
}

/// `state`: the state of stream `id`'s aggregate after version `at_version`, or as of time `at`.
pub(super) async fn state(
    aggregates: &Replayers,
    store: &AnyStore,
    id: &str,
    at_version: Option<u64>,
    at: Option<DateTime<Utc>>,
    json: bool,
) -> Result<(), CliError> {
    let all = store.read_stream(id, ..).await?;
    let Some(first) = all.first() else {
        return Err(CliError::UnknownStream(id.to_owned()));
    };
    let replay = aggregates
        .get(first.aggregate_type.as_str())
        .ok_or_else(|| CliError::UnknownAggregate(first.aggregate_type.clone()))?;
    let events: Vec<StreamEvent> = all
        .iter()
        .filter(|e| at_version.is_none_or(|v| e.stream_version <= v))
        .take_while(|e| at.is_none_or(|at| e.recorded_at <= at))
        .cloned()
        .map(StreamEvent::from)
        .collect();
    let version = events.last().map_or(0, |e| e.stream_version);
    let state = replay(id, &events)?
        .pop()
        .unwrap_or(serde_json::Value::Null);
    if json {
        print_json(&serde_json::json!({ "stream_id": id, "version": version, "state": state }));
    } else {
        println!("stream `{id}` at version {version} (of {}):", all.len());
        println!(
            "{}",
            serde_json::to_string_pretty(&state).unwrap_or_default()
        );
    }
    Ok(())
}
