//! `/dead-letters`: the parked streams of projections and relays, and (with actions allowed and
//! the token given) their retry and skip.

use std::fmt::Write as _;

use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::page::{cell, escape, number, query_value, table};
use super::{Console, Failure, Page, Shared, headers, tenant_cell};
use crate::cli::CliError;
use crate::cli::store::AnyStore;
use crate::projection::RetryOutcome;

#[derive(Deserialize)]
pub(super) struct Message {
    message: Option<String>,
}

/// `/dead-letters`: the parked streams, with retry and skip when actions are allowed.
pub(super) async fn dead_letters(
    State(console): State<Shared>,
    Query(query): Query<Message>,
) -> Page {
    let parked = console.store.parked().await?;
    let relays = console.store.relays().await?;
    let mut body = String::new();
    if let Some(message) = &query.message {
        let _ = write!(
            body,
            "<p class=\"message\" id=\"message\">{}</p>",
            escape(message)
        );
    }
    let actions = console.token.is_some();
    let relay_letters = relays
        .iter()
        .any(|(_, status)| !status.dead_letters.is_empty());
    if actions && (!parked.is_empty() || relay_letters) {
        body.push_str("<p><label>Token <input type=\"password\" id=\"token\" form=\"none\" autocomplete=\"off\" oninput=\"for(const f of document.querySelectorAll('input[name=token]'))f.value=this.value\"></label> <span class=\"quiet\">(the console's token, from FACTUM_CONSOLE_TOKEN)</span></p>");
    }
    if !relays.is_empty() {
        body.push_str("<h2>Projections</h2>");
    }
    if parked.is_empty() {
        body.push_str("<p class=\"quiet\" id=\"empty\">No parked streams.</p>");
    } else {
        let tenants = parked.iter().any(|p| p.tenant.is_some());
        let rows: Vec<Vec<String>> = parked
            .iter()
            .map(|p| {
                let registered = console
                    .cli
                    .registered(&console.store, &p.projection)
                    .is_ok();
                let act = match (actions, registered, p.tenant.as_deref()) {
                    // In a view across tenants, the console's own runners are those across
                    // tenants: a tenant's runners act in that tenant's console.
                    (true, _, Some(tenant)) if tenant != "*" => cell(&format!(
                        "from its tenant's console: factum serve --tenant {tenant}"
                    )),
                    (true, true, _) => format!(
                        "<td>{}{}</td>",
                        action_form(
                            "dead-letters",
                            "retry",
                            ("projection", &p.projection),
                            &p.stream_id
                        ),
                        action_form(
                            "dead-letters",
                            "skip",
                            ("projection", &p.projection),
                            &p.stream_id
                        )
                    ),
                    (true, false, _) => cell("not registered in this tool"),
                    (false, _, _) => cell("read-only (start with --allow-actions)"),
                };
                let mut row = tenant_cell(p.tenant.as_deref());
                row.extend([
                    cell(&p.projection),
                    number(u64::from(p.version)),
                    stream_link(&p.stream_id),
                    number(p.first_version),
                    number(p.events),
                    format!(
                        "<td class=\"mono\">{}</td>",
                        escape(p.error.as_deref().unwrap_or(""))
                    ),
                    act,
                ]);
                row
            })
            .collect();
        body.push_str(&table(
            &headers(
                tenants,
                &[
                    "Projection",
                    "Version",
                    "Stream",
                    "From version",
                    "Events",
                    "Error",
                    "",
                ],
            ),
            &rows,
        ));
    }
    if !relays.is_empty() {
        body.push_str("<h2>Relays</h2>");
        body.push_str(&relay_dead_letters(&relays, actions));
    }
    Ok(console.page("Dead letters", "/dead-letters", &body))
}

/// The relays' parked streams: each stream's refused event (the broker's refusal) and how
/// many wait behind it, with retry and skip when actions are allowed (a relay needs nothing
/// registered: the relay holding the lease acts on them within a second).
fn relay_dead_letters(relays: &[(String, crate::relay::RelayStatus)], actions: bool) -> String {
    let mut rows = Vec::new();
    for (relay, status) in relays {
        let mut streams: Vec<&str> = status
            .dead_letters
            .iter()
            .map(|letter| letter.stream_id.as_str())
            .collect();
        streams.sort_unstable();
        streams.dedup();
        for stream in streams {
            let letters: Vec<_> = status
                .dead_letters
                .iter()
                .filter(|letter| letter.stream_id == stream)
                .collect();
            let Some(first) = letters.iter().min_by_key(|letter| letter.stream_version) else {
                continue;
            };
            let act = if actions {
                format!(
                    "<td>{}{}</td>",
                    action_form("relay-dead-letters", "retry", ("relay", relay), stream),
                    action_form("relay-dead-letters", "skip", ("relay", relay), stream)
                )
            } else {
                cell("read-only (start with --allow-actions)")
            };
            rows.push(vec![
                cell(relay),
                stream_link(stream),
                number(first.stream_version),
                cell(&first.event_type),
                number(letters.len() as u64 - 1),
                format!(
                    "<td class=\"mono\">{}</td>",
                    escape(
                        first
                            .error
                            .as_deref()
                            .unwrap_or("waits behind its stream's refused event")
                    )
                ),
                act,
            ]);
        }
    }
    if rows.is_empty() {
        return "<p class=\"quiet\" id=\"relays-empty\">No event refused by a broker.</p>"
            .to_owned();
    }
    table(
        &[
            "Relay",
            "Stream",
            "Refused version",
            "Event type",
            "Waiting behind",
            "Broker's refusal",
            "",
        ],
        &rows,
    )
}

/// A table cell linking to a stream's page.
fn stream_link(stream: &str) -> String {
    format!(
        "<td><a href=\"/stream?id={}\">{}</a></td>",
        query_value(stream),
        escape(stream)
    )
}

/// A form posting `action` to `/<page>/<action>` for a parked stream of the runner `runner`
/// (`projection` or `relay`, and its name), with the token field the page fills.
fn action_form(page: &str, action: &str, (kind, runner): (&str, &str), stream: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" action=\"/{page}/{action}\">\
         <input type=\"hidden\" name=\"{kind}\" value=\"{}\">\
         <input type=\"hidden\" name=\"stream\" value=\"{}\">\
         <input type=\"hidden\" name=\"token\" value=\"\">\
         <button type=\"submit\" name=\"{action}\" data-stream=\"{}\">{}</button></form>",
        escape(runner),
        escape(stream),
        escape(stream),
        if action == "retry" { "Retry" } else { "Skip" }
    )
}

#[derive(Deserialize)]
pub(super) struct Action {
    projection: String,
    stream: String,
    token: String,
}

#[derive(Deserialize)]
pub(super) struct RelayAction {
    relay: String,
    stream: String,
    token: String,
}

impl Console {
    /// The store relays keep their dead letters in (PostgreSQL).
    fn relay_store(&self) -> Result<&crate::store::PostgresStore, Failure> {
        match &self.store {
            AnyStore::Postgres(store) => Ok(store),
            AnyStore::Sqlite(_) => Err(Failure(
                StatusCode::NOT_FOUND,
                "relays run on PostgreSQL stores: this one has none".to_owned(),
            )),
        }
    }

    /// Refuses an action unless actions are allowed and `token` is theirs.
    fn authorize(&self, token: &str) -> Result<(), Failure> {
        let Some(expected) = &self.token else {
            return Err(Failure(
                StatusCode::FORBIDDEN,
                "the console is read-only: start it with --allow-actions and a token in FACTUM_CONSOLE_TOKEN".to_owned(),
            ));
        };
        // The same time whatever the first differing byte.
        let same = expected.len() == token.len()
            && expected
                .bytes()
                .zip(token.bytes())
                .fold(0, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(Failure(
                StatusCode::UNAUTHORIZED,
                "wrong token: give the console's token (FACTUM_CONSOLE_TOKEN)".to_owned(),
            ))
        }
    }
}

/// Back to the dead letters, saying what happened.
fn said(message: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            format!("/dead-letters?message={}", query_value(message)),
        )],
    )
        .into_response()
}

/// `POST /dead-letters/retry`: handles a parked stream's events again.
pub(super) async fn retry(
    State(console): State<Shared>,
    Form(action): Form<Action>,
) -> Result<Response, Failure> {
    console.authorize(&action.token)?;
    let projection = console.cli.registered(&console.store, &action.projection)?;
    tracing::info!(projection = %action.projection, stream = %action.stream, "console: retry");
    let message = match projection.retry(&console.store, &action.stream).await? {
        RetryOutcome::Drained { handled } => format!(
            "{} drained: {handled} events handled, the stream flows again",
            action.stream
        ),
        RetryOutcome::Stopped {
            stream_version,
            error,
            ..
        } => format!(
            "{} stopped again at version {stream_version}: {error}",
            action.stream
        ),
    };
    Ok(said(&message))
}

/// `POST /dead-letters/skip`: skips a parked stream's first event (kept on record).
pub(super) async fn skip(
    State(console): State<Shared>,
    Form(action): Form<Action>,
) -> Result<Response, Failure> {
    console.authorize(&action.token)?;
    let projection = console.cli.registered(&console.store, &action.projection)?;
    tracing::info!(projection = %action.projection, stream = %action.stream, "console: skip");
    let message = match projection.skip(&console.store, &action.stream).await? {
        Some(version) => format!(
            "{} version {version} skipped (kept on record)",
            action.stream
        ),
        None => format!("{} is not parked", action.stream),
    };
    Ok(said(&message))
}

/// `POST /relay-dead-letters/retry`: asks a relay to publish a parked stream again, from its
/// refused event.
pub(super) async fn relay_retry(
    State(console): State<Shared>,
    Form(action): Form<RelayAction>,
) -> Result<Response, Failure> {
    console.authorize(&action.token)?;
    let store = console.relay_store()?;
    tracing::info!(relay = %action.relay, stream = %action.stream, "console: relay retry");
    let message = match crate::relay::retry(store, &action.relay, &action.stream)
        .await
        .map_err(CliError::from)?
    {
        0 => format!("{} is not parked by relay {}", action.stream, action.relay),
        marked => format!(
            "relay {} publishes {} again ({marked} events) within a second, if it runs",
            action.relay, action.stream
        ),
    };
    Ok(said(&message))
}

/// `POST /relay-dead-letters/skip`: asks a relay to skip a parked stream's refused event
/// (never published) and publish those behind it.
pub(super) async fn relay_skip(
    State(console): State<Shared>,
    Form(action): Form<RelayAction>,
) -> Result<Response, Failure> {
    console.authorize(&action.token)?;
    let store = console.relay_store()?;
    tracing::info!(relay = %action.relay, stream = %action.stream, "console: relay skip");
    let message = match crate::relay::skip(store, &action.relay, &action.stream)
        .await
        .map_err(CliError::from)?
    {
        Some(letter) => format!(
            "{} version {} skipped (never published); relay {} publishes those behind it within a second, if it runs",
            action.stream, letter.stream_version, action.relay
        ),
        None => format!("{} is not parked by relay {}", action.stream, action.relay),
    };
    Ok(said(&message))
}
