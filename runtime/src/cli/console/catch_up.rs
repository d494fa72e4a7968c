//! `/`: each projection, saga and relay against the head of the store, their lag charts, the
//! runners the application's metrics report, and the seed's alerts.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use axum::extract::State;
use chrono::Utc;

use super::page::{self, badge, cell, escape, number, progress, query_value, table};
use super::{
    APPEND_ALERT, LAG_ALERT, Page, SAMPLE_EVERY, STREAM_ALERT, Shared, WINDOW, headers, relay_key,
    scrape, tenant_cell,
};

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
pub(super) async fn dashboard(State(console): State<Shared>) -> Page {
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
