//! OTLP export (issue 16, part 1; feature `otel`): what Factum records through the `metrics`
//! facade and the spans it makes through `tracing` leave the process over OTLP/HTTP (its JSON
//! encoding), by OpenTelemetry's own exporters wired as an application would wire them
//! (`metrics-exporter-otel` as the `metrics` recorder, `tracing-opentelemetry` as the layer),
//! to a receiver on a free port that keeps what it is sent, as a collector's OTLP/HTTP
//! endpoint would. One test: the recorder and the subscriber are global.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use factum::Repository;
use factum::projection::ProjectionRunner;
use factum::store::SqliteStore;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use serde_json::Value;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[path = "support/tenant_domain.rs"]
mod tenant_domain;

use tenant_domain::{Account, Deposit, Ledger};

/// What the receiver was sent: (signal, body), `metrics` or `traces`.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// An OTLP/HTTP receiver on a free port (`/v1/metrics`, `/v1/traces`, JSON bodies): its base
/// URL, and what it keeps.
async fn receiver() -> (String, Received) {
    async fn receive(
        Path(signal): Path<String>,
        State(received): State<Received>,
        body: axum::body::Bytes,
    ) -> ([(&'static str, &'static str); 1], &'static str) {
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        received.lock().unwrap().push((signal, body));
        ([("content-type", "application/json")], "{}")
    }
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/{signal}", axum::routing::post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// The bodies sent for `signal`.
fn sent(received: &Received, signal: &str) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| s == signal)
        .map(|(_, body)| body.clone())
        .collect()
}

/// An OTLP integer: a JSON number, or a string (the protobuf JSON mapping of 64-bit ones).
fn integer(value: &Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("an OTLP integer: {value}"))
}

/// An attribute's string value in an OTLP attribute list.
fn attribute<'a>(attributes: &'a Value, key: &str) -> Option<&'a str> {
    attributes.as_array()?.iter().find(|a| a["key"] == key)?["value"]["stringValue"].as_str()
}

/// Every data point of the metric `name` across the bodies.
fn points(bodies: &[Value], name: &str) -> Vec<Value> {
    let mut points = Vec::new();
    for body in bodies {
        for resource in body["resourceMetrics"].as_array().into_iter().flatten() {
            for scope in resource["scopeMetrics"].as_array().into_iter().flatten() {
                for metric in scope["metrics"].as_array().into_iter().flatten() {
                    if metric["name"] == name {
                        for kind in ["histogram", "sum", "gauge"] {
                            points.extend(
                                metric[kind]["dataPoints"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .cloned(),
                            );
                        }
                    }
                }
            }
        }
    }
    points
}

/// Every span across the bodies: (name, trace id, span id, parent span id).
fn spans(bodies: &[Value]) -> Vec<(String, String, String, String)> {
    let mut spans = Vec::new();
    for body in bodies {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                    spans.push((
                        text("name"),
                        text("traceId"),
                        text("spanId"),
                        text("parentSpanId"),
                    ));
                }
            }
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_spans_are_exported_over_otlp() {
    let (url, received) = receiver().await;
    // The exporters run on threads of their own (a periodic reader, a batch processor), with
    // a blocking HTTP client, as OpenTelemetry's SDK arranges them.
    let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{url}/v1/metrics"))
        .with_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let meters = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(opentelemetry_sdk::metrics::PeriodicReader::builder(metric_exporter).build())
        .build();
    let recorder = metrics_exporter_otel::OpenTelemetryRecorder::new(meters.meter("factum"));
    for name in factum::metrics::DURATION_HISTOGRAMS {
        recorder.set_histogram_bounds(
            &metrics::KeyName::from(name),
            factum::metrics::DURATION_BOUNDS.to_vec(),
        );
    }
    metrics::set_global_recorder(recorder).unwrap();
    factum::metrics::describe();
    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{url}/v1/traces"))
        .with_timeout(Duration::from_secs(10))
        .with_headers(std::collections::HashMap::new())
        .build()
        .unwrap();
    let tracers = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracers.tracer("factum-test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let store = SqliteStore::in_memory().await.unwrap();
    store.migrate().await.unwrap();
    let accounts = Repository::<Account, _>::new(store.clone());
    for n in 0..3 {
        accounts
            .execute(&format!("acc-{n}"), Deposit(n + 1))
            .instrument(tracing::info_span!("deposit"))
            .await
            .unwrap();
    }
    let mut ledger = ProjectionRunner::new(store.clone(), Ledger::default());
    ledger.catch_up().await.unwrap();
    assert_eq!(ledger.projection().cents, 1 + 2 + 3);
    // What an application does at shutdown: flush both providers (blocking calls).
    tokio::task::spawn_blocking(move || {
        meters.force_flush().unwrap();
        tracers.force_flush().unwrap();
    })
    .await
    .unwrap();

    // The appends' duration histogram, labelled as the README's table says, in buckets of
    // seconds, counts the three appends; the events counter sums their events. Both are
    // cumulative: the last export holds every measurement.
    let metrics = sent(&received, "metrics");
    assert!(!metrics.is_empty(), "the metrics reached the receiver");
    let metrics = &metrics[metrics.len() - 1..];
    let appended: Vec<Value> = points(metrics, "factum.append.duration")
        .into_iter()
        .filter(|point| {
            attribute(&point["attributes"], "store") == Some("sqlite")
                && attribute(&point["attributes"], "aggregate") == Some("Account")
                && attribute(&point["attributes"], "outcome") == Some("ok")
        })
        .collect();
    assert_eq!(
        appended.iter().map(|p| integer(&p["count"])).sum::<u64>(),
        3,
        "{appended:?}"
    );
    let bounds: Vec<f64> = appended[0]["explicitBounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bound| bound.as_f64().unwrap())
        .collect();
    assert_eq!(bounds, factum::metrics::DURATION_BOUNDS);
    let events = points(metrics, "factum.append.events");
    assert_eq!(
        events
            .iter()
            .filter(|p| attribute(&p["attributes"], "aggregate") == Some("Account"))
            .map(|p| integer(&p["asInt"]))
            .sum::<u64>(),
        3,
        "{events:?}"
    );

    // Each command's span and the projection handler's span of its event share a trace.
    let spans = spans(&sent(&received, "traces"));
    let commands: Vec<_> = spans.iter().filter(|s| s.0 == "deposit").collect();
    assert_eq!(commands.len(), 3, "{spans:?}");
    for (_, trace, _, _) in commands {
        assert_eq!(trace.len(), 32, "a trace id in hex: {trace}");
        assert!(
            spans
                .iter()
                .any(|s| s.0 == "projection ledger handles Deposited" && s.1 == *trace),
            "the projection's span in the command's trace {trace}: {spans:?}"
        );
    }
}
