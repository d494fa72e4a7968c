//! `/streams`, `/stream`, `/event`, `/correlation`: the largest streams, a stream's envelopes
//! (with each registered aggregate's state after each event), one event, and a flow's events
//! across streams.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::page::{cell, escape, number, query_value, table};
use super::{Failure, Page, Shared};
use crate::cli::{CliError, output};

/// `/streams`: the largest streams and a box to open one.
pub(super) async fn streams(State(console): State<Shared>) -> Page {
    let stats = console.store.stats(20).await?;
    let rows: Vec<Vec<String>> = stats
        .largest_streams
        .iter()
        .map(|(stream, events)| {
            vec![
                format!(
                    "<td><a href=\"/stream?id={}\">{}</a></td>",
                    query_value(stream),
                    escape(stream)
                ),
                number(*events),
            ]
        })
        .collect();
    let mut body = String::from(
        "<form method=\"get\" action=\"/stream\"><label>Stream id <input name=\"id\" id=\"stream-id\"></label> <button type=\"submit\">Open</button></form>",
    );
    let _ = write!(
        body,
        "<h2>Largest streams</h2>{}",
        table(&["Stream", "Events"], &rows)
    );
    let mut types: Vec<(&String, &u64)> = stats.events_per_type.iter().collect();
    types.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let rows: Vec<Vec<String>> = types
        .iter()
        .map(|(event_type, n)| vec![cell(event_type), number(**n)])
        .collect();
    let _ = write!(
        body,
        "<h2>Events per type</h2>{}",
        table(&["Event type", "Events"], &rows)
    );
    Ok(console.page("Streams", "/streams", &body))
}

#[derive(Deserialize)]
pub(super) struct Id {
    id: String,
}

/// `/stream?id=`: a stream's events, envelopes, payloads and the state after each event.
pub(super) async fn stream(State(console): State<Shared>, Query(Id { id }): Query<Id>) -> Page {
    let events = console.store.read_stream(&id, ..).await?;
    if events.is_empty() {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no stream `{id}` in {}", console.store.describe()),
        ));
    }
    let aggregate = events[0].aggregate_type.clone();
    let states = match console.cli.aggregates.get(aggregate.as_str()) {
        Some(replay) => {
            let stream_events: Vec<crate::store::StreamEvent> = events
                .iter()
                .cloned()
                .map(crate::store::StreamEvent::from)
                .collect();
            Some(replay(&id, &stream_events).map_err(CliError::from)?)
        }
        None => None,
    };
    let mut body = format!(
        "<p>{} · {} events{}</p>",
        escape(&aggregate),
        events.len(),
        if states.is_none() {
            " · the state is not shown: the aggregate type is not registered in this tool"
        } else {
            ""
        }
    );
    let rows: Vec<Vec<String>> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let state = states
                .as_ref()
                .and_then(|s| s.get(i))
                .map_or_else(String::new, ToString::to_string);
            vec![
                number(e.stream_version),
                number(e.global_position),
                cell(&format!("{} v{}", e.event_type, e.schema_version)),
                cell(&e.recorded_at.format(output::TIME_FORMAT).to_string()),
                format!(
                    "<td class=\"mono\">{}{}</td>",
                    escape(e.event.as_str()),
                    if e.shredded { " (shredded)" } else { "" }
                ),
                format!("<td class=\"mono\">{}</td>", escape(&state)),
                format!(
                    "<td class=\"mono\">id {}<br>caused by <a href=\"/event?id={}\">{}</a><br>correlation <a href=\"/correlation?id={}\">{}</a>{}</td>",
                    e.event_id,
                    e.causation_id,
                    e.causation_id,
                    e.correlation_id,
                    e.correlation_id,
                    e.actor
                        .as_deref()
                        .map_or_else(String::new, |a| format!("<br>actor {}", escape(a)))
                ),
            ]
        })
        .collect();
    body.push_str(&table(
        &[
            "Version",
            "Position",
            "Event",
            "Recorded at",
            "Payload",
            "State after",
            "Envelope",
        ],
        &rows,
    ));
    Ok(console.page(&format!("Stream {id}"), "/streams", &body))
}

/// `/event?id=`: where an event (a causation id, say) is; a command's id names no event.
pub(super) async fn event(State(console): State<Shared>, Query(Id { id }): Query<Id>) -> Page {
    let parsed = uuid::Uuid::parse_str(&id)
        .map_err(|_| Failure(StatusCode::BAD_REQUEST, format!("`{id}` is not an id")))?;
    let Some(event) = console.store.read_event(parsed).await? else {
        let body = format!(
            "<p>No event has the id {}: it is a command's (events a command caused name it as their causation).</p>",
            escape(&id)
        );
        return Ok(console.page("Event", "/streams", &body));
    };
    let body = format!(
        "<p><a href=\"/stream?id={}\">{}</a> version {}: {} v{}</p><p class=\"mono\">{}</p>",
        query_value(&event.stream_id),
        escape(&event.stream_id),
        event.stream_version,
        escape(&event.event_type),
        event.schema_version,
        escape(event.event.as_str())
    );
    Ok(console.page("Event", "/streams", &body))
}

/// The most events the correlation page lists.
const CORRELATED: u64 = 500;

/// `/correlation?id=`: the events of one business flow across streams, in feed order.
pub(super) async fn correlation(
    State(console): State<Shared>,
    Query(Id { id }): Query<Id>,
) -> Page {
    let parsed = uuid::Uuid::parse_str(&id)
        .map_err(|_| Failure(StatusCode::BAD_REQUEST, format!("`{id}` is not an id")))?;
    let events = console.store.correlated(parsed, CORRELATED).await?;
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|(stream, version, event_type, event_id, causation)| {
            vec![
                format!(
                    "<td><a href=\"/stream?id={}\">{}</a></td>",
                    query_value(stream),
                    escape(stream)
                ),
                number(*version),
                cell(event_type),
                cell(event_id),
                format!(
                    "<td class=\"mono\"><a href=\"/event?id={}\">{}</a></td>",
                    query_value(causation),
                    escape(causation)
                ),
            ]
        })
        .collect();
    let body = format!(
        "<p>{} events of correlation {} across {} streams, in feed order{}.</p>{}",
        events.len(),
        escape(&id),
        events
            .iter()
            .map(|e| &e.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        if events.len() as u64 == CORRELATED {
            " (the first ones only)"
        } else {
            ""
        },
        table(
            &["Stream", "Version", "Event", "Event id", "Caused by"],
            &rows
        )
    );
    Ok(console.page("Correlation", "/streams", &body))
}
