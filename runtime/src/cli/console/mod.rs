//! `factum serve`: a web console on the store, served by the tool (axum; pages written on the
//! server, no script and nothing fetched from the internet, so it works offline).
//!
//! - **Catch-up** (`/`): each projection and saga against the head of the store (position,
//!   events behind, how long the oldest unhandled event has waited, parked streams, state),
//!   the events behind over the last ten minutes as a chart (sampled by the console every
//!   [`SAMPLE_EVERY`] while it runs), saga instances and their queued commands, the relays
//!   (PostgreSQL), and the seed's alerts where their thresholds are crossed. From the
//!   application's metrics endpoint (`--metrics-url`: `scrape.rs`) come the append latency and
//!   each runner's live state (running or not, its retries), which live in its process.
//! - **Dead letters** (`/dead-letters`): the parked streams; with actions allowed, retry and
//!   skip buttons for projections registered in the tool, and for relays' streams a broker
//!   refused (PostgreSQL; the running relay acts on them).
//! - **Streams** (`/streams`, `/stream?id=`, `/event?id=`): the largest streams, a stream's
//!   envelopes and payloads with the state after each event for registered aggregates, and
//!   links along causation and correlation (`/correlation?id=`: a flow's events across
//!   streams).
//! - **Catalog** (`/catalog/`): the event catalog's site, when the tool registered one.
//!
//! Read-only unless started with `--allow-actions`, and then every action needs the token of
//! [`TOKEN_ENV`]; it listens on localhost unless told otherwise.

mod page;
mod scrape;

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;

use self::page::{badge, cell, escape, layout, number, progress, query_value, table};
use super::store::AnyStore;
use super::{Cli, CliError};
use crate::projection::RetryOutcome;

/// The environment variable holding the token actions need.
pub const TOKEN_ENV: &str = "FACTUM_CONSOLE_TOKEN";

/// How often the console samples each projection's lag for its chart.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// How much lag history the chart shows.
const WINDOW: Duration = Duration::from_secs(600);

/// The seed's alert thresholds (seed 003).
const LAG_ALERT: Duration = Duration::from_secs(5);
const STREAM_ALERT: u64 = 10_000;
const APPEND_ALERT: Duration = Duration::from_millis(100);

/// What the console serves from.
struct Console {
    cli: Cli,
    store: AnyStore,
    /// The actions' token, when actions are allowed.
    token: Option<String>,
    /// Events behind per projection (`name v<version>`), sampled.
    lag: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
    /// The application's metrics endpoint, for the append-latency alert and the runners' live
    /// state.
    metrics: Option<scrape::Scraper>,
}

type Shared = Arc<Console>;

/// Serves the console on `listen` until the process is stopped (Ctrl-C ends it); `token`:
/// actions are allowed, each with this token.
pub(super) async fn serve(
    cli: &Cli,
    store: AnyStore,
    listen: SocketAddr,
    token: Option<String>,
    metrics_url: Option<String>,
) -> Result<(), CliError> {
    let metrics = metrics_url
        .map(|url| scrape::Scraper::new(&url))
        .transpose()?;
    if token.as_ref().is_some_and(|token| token.len() < 16) {
        return Err(CliError::Usage(format!(
            "--allow-actions needs a token of at least 16 characters in {TOKEN_ENV}: every retry or skip must give it"
        )));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {listen}: {e}")))?;
    let console = Arc::new(Console {
        cli: cli.clone(),
        store,
        token,
        lag: Mutex::new(HashMap::new()),
        metrics,
    });
    let sampler = tokio::spawn(sample(Arc::clone(&console)));
    let bound = listener.local_addr().unwrap_or(listen);
    println!(
        "console on http://{bound}/ ({}); Ctrl-C stops it",
        if console.token.is_some() {
            "actions allowed with the token"
        } else {
            "read-only"
        }
    );
    let app = axum::Router::new()
        .route("/", get(dashboard))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/retry", post(retry))
        .route("/dead-letters/skip", post(skip))
        .route("/relay-dead-letters/retry", post(relay_retry))
        .route("/relay-dead-letters/skip", post(relay_skip))
        .route("/streams", get(streams))
        .route("/stream", get(stream))
        .route("/event", get(event))
        .route("/correlation", get(correlation))
        .route("/catalog/", get(catalog_index))
        .route("/catalog/{file}", get(catalog_file))
        .with_state(console);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    sampler.abort();
    served.map_err(|e| CliError::Usage(format!("the console stopped: {e}")))
}

/// Samples every projection's and relay's events behind, for the charts (a store that does
/// not answer gives no sample, and the next try comes as usual).
async fn sample(console: Shared) {
    loop {
        let mut behind = Vec::new();
        if let Ok(checkpoints) = console.store.checkpoints().await {
            behind.extend(
                checkpoints
                    .into_iter()
                    .map(|checkpoint| (checkpoint.key(), checkpoint.events_after)),
            );
        }
        if let Ok(relays) = console.store.relays().await {
            behind.extend(
                relays
                    .into_iter()
                    .map(|(name, status)| (relay_key(&name), status.behind)),
            );
        }
        console.record(behind, Instant::now());
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

impl Console {
    /// Records the events behind sampled `now` (by key), keeping the chart's window.
    fn record(&self, behind: Vec<(String, u64)>, now: Instant) {
        let mut lag = self.lag.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, events) in behind {
            let samples = lag.entry(key).or_default();
            samples.push_back((now, events));
            while samples
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
            {
                samples.pop_front();
            }
        }
    }
}

/// A row's first cell in a view across tenants: whose runner it is; none otherwise.
fn tenant_cell(tenant: Option<&str>) -> Vec<String> {
    tenant
        .map(|tenant| cell(super::store::scope_label(tenant)))
        .into_iter()
        .collect()
}

/// A table's headers, led by "Tenant" in a view across tenants.
fn headers<'a>(tenants: bool, rest: &[&'a str]) -> Vec<&'a str> {
    let mut headers = Vec::with_capacity(rest.len() + 1);
    if tenants {
        headers.push("Tenant");
    }
    headers.extend_from_slice(rest);
    headers
}

/// A relay's key among the sampled lags (projections are keyed `<name> v<version>`).
fn relay_key(name: &str) -> String {
    format!("relay {name}")
}

/// The chart of the lag sampled under `key`.
fn chart_of(
    samples: &HashMap<String, VecDeque<(Instant, u64)>>,
    key: &str,
    now: Instant,
) -> String {
    let chart: Vec<(f64, u64)> = samples
        .get(key)
        .map(|s| {
            s.iter()
                .map(|(at, behind)| (now.duration_since(*at).as_secs_f64(), *behind))
                .collect()
        })
        .unwrap_or_default();
    page::lag_chart(&chart, WINDOW.as_secs_f64())
}

/// A page, or the error it met as a page.
type Page = Result<Html<String>, Failure>;

/// An error shown as a page with its status.
struct Failure(StatusCode, String);

impl From<CliError> for Failure {
    /// A store that does not answer for now (down, restarting, out of connections) is a 503
    /// saying the console reconnects by itself; anything else, a 500.
    fn from(error: CliError) -> Self {
        match &error {
            CliError::Store(cause) if cause.is_transient() => Self(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "The store does not answer for now ({cause}): the console reconnects by itself, so reload this page in a few seconds; if it lasts, check that the database server is running and reachable."
                ),
            ),
            _ => Self(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = layout(
            "Something went wrong",
            "",
            "",
            &format!("<p class=\"alert\">{}</p>", escape(&self.1)),
        );
        (self.0, Html(body)).into_response()
    }
}

impl Console {
    fn page(&self, title: &str, active: &str, body: &str) -> Html<String> {
        Html(layout(title, active, &self.store.describe(), body))
    }
}

/// A runner's live state as its metrics show it: running, retrying, or neither (standing by
/// or stopped), with the failures it retried after.
fn live_state(runner: Option<&scrape::RunnerMetrics>) -> String {
    let Some(runner) = runner else {
        return badge("quiet", "no runner reporting");
    };
    let retried = match runner.retries {
        0 => String::new(),
        1 => " (retried once)".to_owned(),
        n => format!(" (retried {n} times)"),
    };
    match (runner.running, runner.retrying) {
        (Some(true), _) => badge(
            if runner.retries == 0 { "ok" } else { "behind" },
            &format!("running{retried}"),
        ),
        (_, Some(true)) => badge("bad", &format!("retrying{retried}")),
        _ => badge(
            "behind",
            &format!("not running: standing by or stopped{retried}"),
        ),
    }
}

/// Every runner the application's metrics report: projections, sagas' command sides, relays.
fn runners_table(
    runners: &std::collections::BTreeMap<(String, String), scrape::RunnerMetrics>,
) -> String {
    let mut body = "<h2>Runners reporting</h2>".to_owned();
    if runners.is_empty() {
        body.push_str(
            "<p class=\"quiet\">No runner reports to the metrics endpoint: none has run in the application's process yet.</p>",
        );
        return body;
    }
    let rows: Vec<Vec<String>> = runners
        .iter()
        .map(|((kind, name), runner)| {
            vec![
                cell(kind),
                cell(name),
                format!("<td>{}</td>", live_state(Some(runner))),
                number(runner.retries),
            ]
        })
        .collect();
    body.push_str(&table(&["Kind", "Name", "Live state", "Retries"], &rows));
    body
}

/// `/`: the catch-up dashboard and the alerts.
async fn dashboard(State(console): State<Shared>) -> Page {
    let store = &console.store;
    let checkpoints = store.checkpoints().await?;
    let stats = store.stats(5).await?;
    // The checkpoints count their parked streams (read with them): no second query.
    let parked: u64 = checkpoints.iter().map(|c| c.parked_streams).sum();
    let mut alerts = Vec::new();
    let mut rows = Vec::new();
    // The application's metrics, read once for the page.
    let scraped = match &console.metrics {
        Some(scraper) => Some(scraper.page().await),
        None => None,
    };
    let runners = match &scraped {
        Some(Ok(page)) => Some(scrape::runners(page)),
        _ => None,
    };
    let samples = console
        .lag
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let now = Instant::now();
    // A view across tenants names each runner's tenant.
    let tenants = checkpoints.iter().any(|c| c.tenant.is_some());
    for c in &checkpoints {
        let waited = c
            .waiting_since
            .map(|at| (Utc::now() - at).to_std().unwrap_or(Duration::ZERO));
        let name = c.key();
        if let Some(waited) = waited.filter(|w| *w > LAG_ALERT) {
            alerts.push(format!(
                "projection <b>{}</b> lags {:.1} s behind the store (threshold {} s)",
                escape(&name),
                waited.as_secs_f64(),
                LAG_ALERT.as_secs()
            ));
        }
        let mut state = if c.parked_streams > 0 {
            badge("bad", "parked streams")
        } else if c.events_after == 0 {
            badge("ok", "caught up")
        } else {
            badge("behind", "catching up")
        };
        if let Some(runners) = &runners {
            let key = ("projection".to_owned(), c.projection.clone());
            state.push(' ');
            state.push_str(&live_state(runners.get(&key)));
        }
        let mut row = tenant_cell(c.tenant.as_deref());
        row.extend([
            cell(&format!("{} v{}", c.projection, c.version)),
            format!("<td>{state}</td>"),
            number(c.position),
            number(c.head),
            progress(c.position, c.head),
            number(c.events_after),
            cell(&waited.map_or_else(|| "-".to_owned(), |w| format!("{:.1} s", w.as_secs_f64()))),
            number(c.parked_streams),
            format!("<td>{}</td>", chart_of(&samples, &name, now)),
        ]);
        rows.push(row);
    }
    for (stream, events) in stats
        .largest_streams
        .iter()
        .filter(|(_, n)| *n > STREAM_ALERT)
    {
        alerts.push(format!(
            "stream <a href=\"/stream?id={}\">{}</a> holds {events} events (threshold {STREAM_ALERT}): snapshot it, or split it",
            query_value(stream),
            escape(stream)
        ));
    }
    let latency_note = match (&console.metrics, &scraped) {
        (Some(scraper), Some(page)) => match page {
            Ok(page) => {
                for append in &scrape::slow_appends(page, APPEND_ALERT) {
                    alerts.push(format!(
                        "appends {} take {:.0} ms at the 99th percentile (threshold {} ms)",
                        escape(&append.labels),
                        append.p99.as_secs_f64() * 1000.0,
                        APPEND_ALERT.as_millis()
                    ));
                }
                format!(
                    "append latency read from {}",
                    escape(scraper.url())
                )
            }
            Err(error) => {
                alerts.push(format!(
                    "the metrics endpoint {} could not be read: {}",
                    escape(scraper.url()),
                    escape(error)
                ));
                String::new()
            }
        },
        _ => "append latency (threshold 100 ms) is read from the application's metrics: start the console with <code>--metrics-url</code>".to_owned(),
    };
    if parked > 0 {
        alerts.push(format!(
            "<a href=\"/dead-letters\">{parked} parked stream{}</a> in the dead-letter queue (threshold 0)",
            if parked == 1 { "" } else { "s" }
        ));
    }
    let mut body = String::new();
    let _ = write!(
        body,
        "<p>{} events in {} streams; head at position {}. Lag sampled every {} s while the console runs.</p>",
        stats.events,
        stats.streams,
        store.head().await?,
        SAMPLE_EVERY.as_secs()
    );
    body.push_str("<h2>Alerts</h2>");
    if alerts.is_empty() {
        let _ = write!(
            body,
            "<p class=\"quiet\" id=\"no-alerts\">No threshold crossed: projection lag ≤ 5 s, streams ≤ 10,000 events, no dead letters; {latency_note}.</p>"
        );
    } else {
        for alert in &alerts {
            let _ = write!(body, "<p class=\"alert\">{alert}</p>");
        }
        if !latency_note.is_empty() {
            let _ = write!(body, "<p class=\"quiet\">{latency_note}.</p>");
        }
    }
    body.push_str("<h2>Projections and sagas</h2>");
    if rows.is_empty() {
        body.push_str("<p class=\"quiet\">No projection or saga has run on this store yet.</p>");
    } else {
        body.push_str(&table(
            &headers(
                tenants,
                &[
                    "Runner",
                    "State",
                    "Position",
                    "Head",
                    "",
                    "Behind",
                    "Oldest waiting",
                    "Parked",
                    "Behind, last 10 min",
                ],
            ),
            &rows,
        ));
    }
    if let Some(runners) = &runners {
        body.push_str(&runners_table(runners));
    }
    let sagas = store.sagas().await?;
    if !sagas.is_empty() {
        body.push_str("<h2>Saga instances</h2>");
        let rows: Vec<Vec<String>> = sagas
            .iter()
            .map(|(tenant, name, [active, ended, pending, failed])| {
                let mut row = tenant_cell(tenant.as_deref());
                row.extend([
                    cell(name),
                    number(*active),
                    number(*ended),
                    number(*pending),
                    number(*failed),
                ]);
                row
            })
            .collect();
        body.push_str(&table(
            &headers(
                sagas.iter().any(|(tenant, ..)| tenant.is_some()),
                &[
                    "Saga",
                    "Active",
                    "Ended",
                    "Commands queued",
                    "Commands failed or rejected",
                ],
            ),
            &rows,
        ));
    }
    let relays = store.relays().await?;
    if !relays.is_empty() {
        body.push_str("<h2>Relays</h2>");
        let rows: Vec<Vec<String>> = relays
            .iter()
            .map(|(name, status)| {
                let mut state = if status.dead_letters.is_empty() {
                    if status.behind == 0 {
                        badge("ok", "caught up")
                    } else {
                        badge("behind", "publishing")
                    }
                } else {
                    badge("bad", "dead letters")
                };
                if let Some(runners) = &runners {
                    state.push(' ');
                    state.push_str(&live_state(
                        runners.get(&("relay".to_owned(), name.clone())),
                    ));
                }
                vec![
                    cell(name),
                    format!("<td>{state}</td>"),
                    number(status.checkpoint.position),
                    number(status.published),
                    number(status.behind),
                    number(status.dead_letters.len() as u64),
                    format!("<td>{}</td>", chart_of(&samples, &relay_key(name), now)),
                ]
            })
            .collect();
        body.push_str(&table(
            &[
                "Relay",
                "State",
                "Position",
                "Published",
                "Behind",
                "Dead letters",
                "Behind, last 10 min",
            ],
            &rows,
        ));
    }
    Ok(console.page("Catch-up", "/", &body))
}

#[derive(Deserialize)]
struct Message {
    message: Option<String>,
}

/// `/dead-letters`: the parked streams, with retry and skip when actions are allowed.
async fn dead_letters(State(console): State<Shared>, Query(query): Query<Message>) -> Page {
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
struct Action {
    projection: String,
    stream: String,
    token: String,
}

#[derive(Deserialize)]
struct RelayAction {
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
async fn retry(
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
async fn skip(
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
async fn relay_retry(
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
async fn relay_skip(
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

/// `/streams`: the largest streams and a box to open one.
async fn streams(State(console): State<Shared>) -> Page {
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
struct Id {
    id: String,
}

/// `/stream?id=`: a stream's events, envelopes, payloads and the state after each event.
async fn stream(State(console): State<Shared>, Query(Id { id }): Query<Id>) -> Page {
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
                cell(&e.recorded_at.format(super::output::TIME_FORMAT).to_string()),
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
async fn event(State(console): State<Shared>, Query(Id { id }): Query<Id>) -> Page {
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
async fn correlation(State(console): State<Shared>, Query(Id { id }): Query<Id>) -> Page {
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

/// `/catalog/`: the catalog site's index.
async fn catalog_index(State(console): State<Shared>) -> Result<Response, Failure> {
    catalog(&console, "index.html")
}

/// `/catalog/<file>`: a file of the catalog site.
async fn catalog_file(
    State(console): State<Shared>,
    Path(file): Path<String>,
) -> Result<Response, Failure> {
    catalog(&console, &file)
}

fn catalog(console: &Console, file: &str) -> Result<Response, Failure> {
    let Some((catalog, _)) = &console.cli.catalog else {
        let body = "<p>This tool has no catalog registered: build your tool with <code>Cli::new().catalog(catalog, dir)</code> to browse it here.</p>";
        return Ok(console.page("Catalog", "/catalog/", body).into_response());
    };
    let path = std::path::Path::new(crate::catalog::Catalog::SITE_DIR).join(file);
    let files = catalog.files();
    let Some(content) = files.get(&path) else {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("the catalog has no page {file}"),
        ));
    };
    let kind = if file.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        "text/html; charset=utf-8"
    };
    Ok(([(header::CONTENT_TYPE, kind)], content.clone()).into_response())
}
