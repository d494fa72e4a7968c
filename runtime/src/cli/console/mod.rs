//! `factum serve`: a web console on the store, served by the tool (axum; pages written on the
//! server, no script and nothing fetched from the internet, so it works offline).
//!
//! - **Catch-up** (`/`, `catch_up.rs`): each projection and saga against the head of the store
//!   (position, events behind, how long the oldest unhandled event has waited, parked streams,
//!   state), the events behind over the last ten minutes as a chart (sampled by the console
//!   every [`SAMPLE_EVERY`] while it runs), saga instances and their queued commands, the relays
//!   (PostgreSQL), and the seed's alerts where their thresholds are crossed. From the
//!   application's metrics endpoint (`--metrics-url`: `scrape.rs`) come the append latency and
//!   each runner's live state (running or not, its retries), which live in its process.
//! - **Dead letters** (`/dead-letters`, `dead_letters.rs`): the parked streams; with actions
//!   allowed, retry and skip buttons for projections registered in the tool, and for relays'
//!   streams a broker refused (PostgreSQL; the running relay acts on them).
//! - **Streams** (`/streams`, `/stream?id=`, `/event?id=`; `streams.rs`): the largest streams, a
//!   stream's envelopes and payloads with the state after each event for registered aggregates,
//!   and links along causation and correlation (`/correlation?id=`: a flow's events across
//!   streams).
//! - **Catalog** (`/catalog/`, `catalog.rs`): the event catalog's site, when the tool registered
//!   one.
//!
//! Read-only unless started with `--allow-actions`, and then every action needs the token of
//! [`TOKEN_ENV`]; it listens on localhost unless told otherwise.

mod catalog;
mod catch_up;
mod dead_letters;
mod page;
mod scrape;
mod streams;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use self::page::{cell, escape, layout};
use super::store::AnyStore;
use super::{Cli, CliError};

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
        .route("/", get(catch_up::dashboard))
        .route("/dead-letters", get(dead_letters::dead_letters))
        .route("/dead-letters/retry", post(dead_letters::retry))
        .route("/dead-letters/skip", post(dead_letters::skip))
        .route("/relay-dead-letters/retry", post(dead_letters::relay_retry))
        .route("/relay-dead-letters/skip", post(dead_letters::relay_skip))
        .route("/streams", get(streams::streams))
        .route("/stream", get(streams::stream))
        .route("/event", get(streams::event))
        .route("/correlation", get(streams::correlation))
        .route("/catalog/", get(catalog::catalog_index))
        .route("/catalog/{file}", get(catalog::catalog_file))
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
