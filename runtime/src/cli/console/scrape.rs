//! The application's metrics, scraped from its Prometheus endpoint (`--metrics-url`): the
//! append-latency alert, from `factum.append.duration` (`factum_append_duration` in
//! Prometheus' text format) as a summary's 99th percentile or a histogram's buckets; and each
//! runner's live state, from `factum.runner.running`, `.retrying` and `.retries`, which live in
//! the runners' process rather than in the database the console reads. The console appends
//! and runs nothing, so both are the application's own.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::CliError;

/// The metric, as Prometheus names it.
const METRIC: &str = "factum_append_duration";

/// The runners' metrics, as Prometheus names them (a counter may carry the `_total` suffix).
const RUNNER_RUNNING: &str = "factum_runner_running";
const RUNNER_RETRYING: &str = "factum_runner_retrying";
const RUNNER_RETRIES: &str = "factum_runner_retries";

/// How long a scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The most of a metrics page read.
const MAX_PAGE: usize = 16 << 20;

/// A metrics endpoint.
pub(super) struct Scraper {
    url: String,
    uri: axum::http::Uri,
    client: Client<HttpConnector, Body>,
}

/// Appends of one label set slower than the threshold at the 99th percentile.
#[derive(Debug, PartialEq)]
pub(super) struct SlowAppend {
    /// Their labels (`{aggregate="Account",store="sqlite",...}`).
    pub labels: String,
    /// The 99th percentile (a histogram's: its bucket's upper bound).
    pub p99: Duration,
}

impl Scraper {
    /// A scraper of `url` (`http://host:port/path`).
    pub(super) fn new(url: &str) -> Result<Self, CliError> {
        let uri: axum::http::Uri = url
            .parse()
            .ok()
            .filter(|uri: &axum::http::Uri| uri.scheme_str() == Some("http"))
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--metrics-url {url}: give the application's Prometheus endpoint as http://host:port/metrics"
                ))
            })?;
        Ok(Self {
            url: url.to_owned(),
            uri,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The endpoint's page, read within [`SCRAPE_TIMEOUT`].
    pub(super) async fn page(&self) -> Result<String, String> {
        tokio::time::timeout(SCRAPE_TIMEOUT, self.scrape())
            .await
            .map_err(|_| format!("no answer within {} s", SCRAPE_TIMEOUT.as_secs()))?
    }

    async fn scrape(&self) -> Result<String, String> {
        let response = self
            .client
            .get(self.uri.clone())
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("it answered {}", response.status()));
        }
        let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_PAGE)
            .await
            .map_err(|e| e.to_string())?;
        String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
    }
}

/// A sample line's labels without `drop` (`quantile`, `le`), its value of `drop`, and its
/// value: `name{a="1",quantile="0.99"} 0.5` → (`{a="1"}`, `0.99`, 0.5).
fn sample<'a>(line: &'a str, name: &str, drop: &str) -> Option<(String, &'a str, f64)> {
    let rest = line.strip_prefix(name)?.strip_prefix('{')?;
    let (labels, value) = rest.split_once("} ")?;
    let value: f64 = value.split_whitespace().next()?.parse().ok()?;
    let mut kept = Vec::new();
    let mut dropped = None;
    for label in labels.split(',').filter(|l| !l.is_empty()) {
        match label.strip_prefix(drop).and_then(|l| l.strip_prefix("=\"")) {
            Some(quoted) => dropped = quoted.strip_suffix('"'),
            None => kept.push(label),
        }
    }
    Some((format!("{{{}}}", kept.join(",")), dropped?, value))
}

/// A runner as the application's metrics show it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct RunnerMetrics {
    /// Whether it holds its lease and runs (`None`: not reported).
    pub running: Option<bool>,
    /// Whether it waits out a failure to try again (`None`: not reported).
    pub retrying: Option<bool>,
    /// The failures it retried after since its process started.
    pub retries: u64,
}

/// The runners of `page` by (kind, name): `projection`, `saga` or `relay`, and its name.
pub(super) fn runners(page: &str) -> BTreeMap<(String, String), RunnerMetrics> {
    let mut runners: BTreeMap<(String, String), RunnerMetrics> = BTreeMap::new();
    for line in page.lines() {
        let Some((metric, rest)) = line.split_once('{') else {
            continue;
        };
        let metric = metric.strip_suffix("_total").unwrap_or(metric);
        if ![RUNNER_RUNNING, RUNNER_RETRYING, RUNNER_RETRIES].contains(&metric) {
            continue;
        }
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|label| {
                label
                    .strip_prefix(name)?
                    .strip_prefix("=\"")?
                    .strip_suffix('"')
            })
        };
        let (Some(kind), Some(name)) = (label("kind"), label("name")) else {
            continue;
        };
        let runner = runners
            .entry((kind.to_owned(), name.to_owned()))
            .or_default();
        if metric == RUNNER_RUNNING {
            runner.running = Some(value > 0.0);
        } else if metric == RUNNER_RETRYING {
            runner.retrying = Some(value > 0.0);
        } else {
            // A count: a whole, non-negative number.
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a counter's value"
            )]
            let retries = value.max(0.0) as u64;
            runner.retries = retries;
        }
    }
    runners
}

/// The label sets of `page` whose appends' 99th percentile is above `threshold`.
pub(super) fn slow_appends(page: &str, threshold: Duration) -> Vec<SlowAppend> {
    let threshold = threshold.as_secs_f64();
    let mut slow = Vec::new();
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in page.lines() {
        if let Some((labels, "0.99", p99)) = sample(line, METRIC, "quantile") {
            if p99 > threshold {
                slow.push(SlowAppend {
                    labels,
                    p99: Duration::from_secs_f64(p99),
                });
            }
        } else if let Some((labels, le, count)) = sample(line, &format!("{METRIC}_bucket"), "le") {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            buckets.entry(labels).or_default().push((bound, count));
        }
    }
    for (labels, mut bounds) in buckets {
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = bounds.last().map_or(0.0, |b| b.1);
        if total <= 0.0 {
            continue;
        }
        if let Some((p99, _)) = bounds.iter().find(|(_, count)| *count >= 0.99 * total)
            && *p99 > threshold
        {
            slow.push(SlowAppend {
                labels,
                p99: Duration::from_secs_f64(p99.min(3600.0)),
            });
        }
    }
    slow
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runners_are_read_from_their_gauge_and_counter() {
        let page = "# TYPE factum_runner_running gauge
factum_runner_running{kind=\"projection\",name=\"balances\"} 1
factum_runner_running{kind=\"relay\",name=\"to-nats\"} 0
factum_runner_retrying{kind=\"relay\",name=\"to-nats\"} 1
# TYPE factum_runner_retries counter
factum_runner_retries{kind=\"relay\",name=\"to-nats\"} 7
factum_runner_retries_total{name=\"welcome\",kind=\"saga\"} 2
factum_append_events{store=\"sqlite\",aggregate=\"Account\"} 3
";
        let key = |kind: &str, name: &str| (kind.to_owned(), name.to_owned());
        assert_eq!(
            runners(page),
            BTreeMap::from([
                (
                    key("projection", "balances"),
                    RunnerMetrics {
                        running: Some(true),
                        retrying: None,
                        retries: 0
                    }
                ),
                (
                    key("relay", "to-nats"),
                    RunnerMetrics {
                        running: Some(false),
                        retrying: Some(true),
                        retries: 7
                    }
                ),
                (
                    key("saga", "welcome"),
                    RunnerMetrics {
                        running: None,
                        retrying: None,
                        retries: 2
                    }
                ),
            ])
        );
    }

    #[test]
    fn a_summarys_99th_percentile_above_the_threshold_is_slow() {
        let page = "# TYPE factum_append_duration summary
factum_append_duration{store=\"sqlite\",aggregate=\"Account\",quantile=\"0.5\"} 0.002
factum_append_duration{store=\"sqlite\",aggregate=\"Account\",quantile=\"0.99\"} 0.31
factum_append_duration{store=\"sqlite\",aggregate=\"Order\",quantile=\"0.99\"} 0.004
factum_append_duration_sum{store=\"sqlite\",aggregate=\"Account\"} 0.5
";
        assert_eq!(
            slow_appends(page, Duration::from_millis(100)),
            [SlowAppend {
                labels: "{store=\"sqlite\",aggregate=\"Account\"}".to_owned(),
                p99: Duration::from_secs_f64(0.31),
            }]
        );
    }

    #[test]
    fn a_histograms_99th_percentile_is_its_buckets_bound() {
        let page = "factum_append_duration_bucket{store=\"pg\",le=\"0.05\"} 90
factum_append_duration_bucket{store=\"pg\",le=\"0.25\"} 100
factum_append_duration_bucket{store=\"pg\",le=\"+Inf\"} 100
factum_append_duration_bucket{store=\"x\",le=\"0.05\"} 100
factum_append_duration_bucket{store=\"x\",le=\"+Inf\"} 100
";
        assert_eq!(
            slow_appends(page, Duration::from_millis(100)),
            [SlowAppend {
                labels: "{store=\"pg\"}".to_owned(),
                p99: Duration::from_secs_f64(0.25),
            }]
        );
    }
}
