//! The relay to NATS JetStream against a real `nats-server` of each test's own: feed order and
//! headers, each event once across a restart of the relay, a broker killed and restarted
//! mid-run, and an event the stream refuses parked with its stream while the others flow (and
//! counted in the relay's metrics).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use factum::relay::{JetStreamSink, Relay, RelayState, headers};
use factum::testing::nats::NatsServer;
use factum::testing::postgres::TemporaryStore;
use factum::{EventStore, ExpectedVersion, NewEvent, Payload};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::{oneshot, watch};

/// The process's metrics recorder (installed once, for the binary), to read what the relays
/// record.
fn recorder() -> &'static Snapshotter {
    static SNAPSHOTTER: std::sync::OnceLock<Snapshotter> = std::sync::OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the binary's only recorder");
        snapshotter
    })
}

const STREAM: &str = "FACTUM_EVENTS";

fn ping(n: u64) -> NewEvent {
    NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({ "n": n })).unwrap(),
    )
}

async fn jetstream_with(server: &NatsServer, max_message_size: i32) -> jetstream::Context {
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = jetstream::new(client);
    context
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["factum.>".into()],
            max_message_size,
            ..Default::default()
        })
        .await
        .unwrap();
    context
}

/// A relay running in a task.
struct Running {
    name: String,
    state: watch::Receiver<RelayState>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<factum::Result<()>>,
}

fn spawn(relay: Relay<JetStreamSink>, name: &str) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let state = relay.state();
    let task = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    Running {
        name: name.to_owned(),
        state,
        stop,
        task,
    }
}

impl Running {
    /// Waits until the stream holds `count` messages and the relay's checkpoint is past every
    /// stored event, then stops the relay, which must end without an error.
    async fn stop_when_done(
        self,
        context: &jetstream::Context,
        store: &TemporaryStore,
        count: u64,
    ) {
        wait_for_messages(context, count, Duration::from_secs(60)).await;
        let began = std::time::Instant::now();
        while factum::relay::status(store, &self.name)
            .await
            .unwrap()
            .behind
            > 0
        {
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "the relay's checkpoint lags"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// Every message of the stream, in stream order: (subject, headers by name, payload).
async fn messages(
    context: &jetstream::Context,
) -> Vec<(String, HashMap<String, String>, serde_json::Value)> {
    let mut stream = context.get_stream(STREAM).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut all = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let headers = [
            headers::EVENT_ID,
            headers::EVENT_TYPE,
            headers::STREAM_ID,
            headers::STREAM_VERSION,
            headers::AGGREGATE_TYPE,
            headers::SCHEMA_VERSION,
            headers::CORRELATION_ID,
            headers::CAUSATION_ID,
            headers::RECORDED_AT,
            headers::FEED_POSITION,
            headers::RELAY,
            "Nats-Msg-Id",
        ]
        .into_iter()
        .filter_map(|name| {
            let value = message.headers.get(name)?;
            Some((name.to_owned(), value.as_str().to_owned()))
        })
        .collect();
        let payload = serde_json::from_slice(&message.payload).unwrap();
        all.push((message.subject.to_string(), headers, payload));
    }
    all
}

/// Waits until the stream holds `count` messages (at most `within`).
async fn wait_for_messages(context: &jetstream::Context, count: u64, within: Duration) {
    let began = std::time::Instant::now();
    loop {
        let held = match context.get_stream(STREAM).await {
            Ok(mut stream) => stream
                .info()
                .await
                .map(|info| info.state.messages)
                .unwrap_or(0),
            Err(_) => 0,
        };
        if held >= count {
            return;
        }
        assert!(
            began.elapsed() < within,
            "the stream holds {held} messages, not {count}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each event once (by id), each stream's events in version order, and the envelope in headers.
fn assert_once_in_order(
    messages: &[(String, HashMap<String, String>, serde_json::Value)],
    expected: usize,
) {
    let ids: HashSet<&String> = messages
        .iter()
        .map(|(_, h, _)| &h[headers::EVENT_ID])
        .collect();
    assert_eq!(ids.len(), messages.len(), "an event was published twice");
    assert_eq!(messages.len(), expected, "events are missing");
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for (subject, headers, _) in messages {
        assert_eq!(headers["Nats-Msg-Id"], headers[headers::EVENT_ID]);
        assert_eq!(
            *subject,
            format!(
                "factum.{}.{}",
                headers[headers::AGGREGATE_TYPE],
                headers[headers::EVENT_TYPE]
            )
        );
        let version: u64 = headers[headers::STREAM_VERSION].parse().unwrap();
        let last = versions
            .entry(headers[headers::STREAM_ID].as_str())
            .or_insert(0);
        assert_eq!(
            version,
            *last + 1,
            "stream {} out of order",
            headers[headers::STREAM_ID]
        );
        *last = version;
    }
}

#[tokio::test]
async fn the_relay_publishes_the_feed_in_order_with_its_envelope_and_each_event_once_across_restarts()
 {
    let server = NatsServer::start().unwrap();
    let context = jetstream_with(&server, -1).await;
    let store = TemporaryStore::new().await.unwrap();
    for round in 0..20_u64 {
        for (stream, aggregate) in [
            ("acc-1", "Account"),
            ("acc-2", "Account"),
            ("ord-1", "Order"),
        ] {
            store
                .append(
                    stream,
                    aggregate,
                    ExpectedVersion::Any,
                    vec![ping(round), ping(round)],
                )
                .await
                .unwrap();
        }
    }
    let sink = || async {
        let client = async_nats::connect(server.url()).await.unwrap();
        JetStreamSink::new(client, STREAM, "factum").await.unwrap()
    };
    let relay = Relay::new((*store).clone(), "to-nats", sink().await).batch_size(25);
    spawn(relay, "to-nats")
        .stop_when_done(&context, &store, 120)
        .await;

    let published = messages(&context).await;
    assert_once_in_order(&published, 120);
    let stored = store.read_stream("acc-1", 1..=1).await.unwrap();
    let (_, first, payload) = &published[0];
    assert_eq!(first[headers::EVENT_ID], stored[0].event_id.to_string());
    assert_eq!(first[headers::STREAM_ID], "acc-1");
    assert_eq!(first[headers::SCHEMA_VERSION], "1");
    assert_eq!(first[headers::RELAY], "to-nats");
    assert_eq!(
        first[headers::CORRELATION_ID],
        stored[0].correlation_id.to_string()
    );
    assert_eq!(*payload, serde_json::json!({ "n": 0 }));
    let status = factum::relay::status(&store, "to-nats").await.unwrap();
    assert_eq!(status.behind, 0);
    assert_eq!(status.published, 120);

    // The checkpoint moved back (as if the relay died after the broker's acknowledgements and
    // before its checkpoint): a new relay resumes after the broker's last message.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE \"{}\".relay_checkpoints SET tx = 0, position = 0",
        store.schema()
    )))
    .execute(store.pool())
    .await
    .unwrap();
    for round in 20..25_u64 {
        store
            .append("acc-1", "Account", ExpectedVersion::Any, vec![ping(round)])
            .await
            .unwrap();
    }
    spawn(
        Relay::new((*store).clone(), "to-nats", sink().await),
        "to-nats",
    )
    .stop_when_done(&context, &store, 125)
    .await;
    let published = messages(&context).await;
    assert_once_in_order(&published, 125);
    let status = factum::relay::status(&store, "to-nats").await.unwrap();
    assert_eq!(status.behind, 0, "the relay caught up");
    assert_eq!(
        status.published, 125,
        "it published only the five new events"
    );
}

#[tokio::test]
async fn a_broker_killed_for_five_seconds_mid_run_loses_and_doubles_nothing() {
    let mut server = NatsServer::start().unwrap();
    let context = jetstream_with(&server, -1).await;
    let store = TemporaryStore::new().await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let sink = JetStreamSink::new(client, STREAM, "factum").await.unwrap();
    let relay = Relay::new((*store).clone(), "outage", sink)
        .batch_size(50)
        .retry_backoff(Duration::from_millis(50));
    let mut running = spawn(relay, "outage");

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..2_000_u64 {
                let stream = format!("s-{}", n % 7);
                store
                    .append(&stream, "Probe", ExpectedVersion::Any, vec![ping(n)])
                    .await
                    .unwrap();
                if n % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
        })
    };
    wait_for_messages(&context, 300, Duration::from_secs(30)).await;
    server.kill().unwrap();
    let killed = std::time::Instant::now();
    // Unacknowledged publishes time out (5 s): the relay retries, and its state says so.
    tokio::time::timeout(
        Duration::from_secs(20),
        running
            .state
            .wait_for(|s| matches!(s, RelayState::Retrying { .. })),
    )
    .await
    .expect("the relay notices the outage")
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(killed.elapsed())).await;
    server.resume().unwrap();
    writer.await.unwrap();
    running.stop_when_done(&context, &store, 2_000).await;
    let published = messages(&context).await;
    assert_once_in_order(&published, 2_000);
}

#[tokio::test]
async fn an_event_the_stream_refuses_parks_its_stream_and_the_others_flow() {
    let recorder = recorder();
    let server = NatsServer::start().unwrap();
    let context = jetstream_with(&server, 1024).await;
    let store = TemporaryStore::new().await.unwrap();
    let big = NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({ "n": "x".repeat(4000) })).unwrap(),
    );
    store
        .append("big", "Probe", ExpectedVersion::Any, vec![ping(1)])
        .await
        .unwrap();
    store
        .append(
            "big",
            "Probe",
            ExpectedVersion::Any,
            vec![big.clone(), ping(3)],
        )
        .await
        .unwrap();
    for n in 0..10 {
        store
            .append("small", "Probe", ExpectedVersion::Any, vec![ping(n)])
            .await
            .unwrap();
    }
    let client = async_nats::connect(server.url()).await.unwrap();
    let sink = JetStreamSink::new(client, STREAM, "factum").await.unwrap();
    let running = spawn(Relay::new((*store).clone(), "parking", sink), "parking");
    wait_for_messages(&context, 11, Duration::from_secs(30)).await;
    // Appended after the refusal: parked behind it too.
    store
        .append("big", "Probe", ExpectedVersion::Any, vec![ping(4)])
        .await
        .unwrap();
    store
        .append("small", "Probe", ExpectedVersion::Any, vec![ping(10)])
        .await
        .unwrap();
    running.stop_when_done(&context, &store, 12).await;

    let published = messages(&context).await;
    let streams: Vec<(&str, &str)> = published
        .iter()
        .map(|(_, h, _)| {
            (
                h[headers::STREAM_ID].as_str(),
                h[headers::STREAM_VERSION].as_str(),
            )
        })
        .collect();
    assert_eq!(streams.iter().filter(|(s, _)| *s == "small").count(), 11);
    assert_eq!(
        streams
            .iter()
            .filter(|(s, _)| *s == "big")
            .collect::<Vec<_>>(),
        [&("big", "1")],
        "only the stream's events before the refused one are published"
    );
    // The running relay recorded its dead letters as metrics when it parked them (one
    // snapshot: taking one resets what the recorder holds).
    let snapshot = recorder.snapshot().into_vec();
    let gauge = |state: &str| {
        snapshot.iter().find_map(|(key, _, _, value)| {
            let key = key.key();
            let labelled = |name: &str, value: &str| {
                key.labels().any(|l| l.key() == name && l.value() == value)
            };
            match value {
                DebugValue::Gauge(value)
                    if key.name() == factum::metrics::RELAY_DEAD_LETTERS
                        && labelled("relay", "parking")
                        && labelled("state", state) =>
                {
                    Some(value.into_inner())
                }
                _ => None,
            }
        })
    };
    assert_eq!((gauge("refused"), gauge("waiting")), (Some(1.0), Some(2.0)));
    let status = factum::relay::status(&store, "parking").await.unwrap();
    let letters: Vec<(u64, bool)> = status
        .dead_letters
        .iter()
        .map(|l| (l.stream_version, l.error.is_some()))
        .collect();
    assert_eq!(letters, [(2, true), (3, false), (4, false)]);
    assert_eq!(status.dead_letters[0].event_id, {
        store.read_stream("big", 2..=2).await.unwrap()[0].event_id
    });
    assert!(
        status.dead_letters[0]
            .error
            .as_deref()
            .unwrap()
            .contains("at most 1024"),
        "{:?}",
        status.dead_letters[0].error
    );
    assert_eq!(status.behind, 0);
}

/// An operator's way out of a parked stream: once the stream takes the refused event (its
/// limit raised), `retry` has the running relay publish the parked events in order and the
/// stream flows again; `factum relay skip` drops a refused event and publishes the rest.
#[tokio::test]
async fn a_parked_stream_flows_again_on_retry_and_skip_drops_only_the_refused_event() {
    let server = NatsServer::start().unwrap();
    let context = jetstream_with(&server, 1024).await;
    let store = TemporaryStore::new().await.unwrap();
    let sized = |size: usize| {
        NewEvent::new(
            "Pinged",
            1,
            Payload::encode(&serde_json::json!({ "n": "x".repeat(size) })).unwrap(),
        )
    };
    store
        .append(
            "big",
            "Probe",
            ExpectedVersion::Any,
            vec![ping(1), sized(2_000), ping(3)],
        )
        .await
        .unwrap();
    store
        .append(
            "huge",
            "Probe",
            ExpectedVersion::Any,
            vec![sized(8_000), ping(2)],
        )
        .await
        .unwrap();
    store
        .append("small", "Probe", ExpectedVersion::Any, vec![ping(1)])
        .await
        .unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let sink = JetStreamSink::new(client, STREAM, "factum").await.unwrap();
    let running = spawn(Relay::new((*store).clone(), "parking", sink), "parking");
    wait_for_messages(&context, 2, Duration::from_secs(30)).await;
    let letters = |store: TemporaryStore| async move {
        factum::relay::status(&store, "parking")
            .await
            .unwrap()
            .dead_letters
            .iter()
            .map(|l| (l.stream_id.clone(), l.stream_version))
            .collect::<Vec<_>>()
    };
    let began = std::time::Instant::now();
    while letters(store.clone()).await.len() < 4 {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the streams are not parked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The stream now takes up to 4 KiB: `big` is published again, in order.
    let mut config = context
        .get_stream(STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    config.max_message_size = 4096;
    context.update_stream(config).await.unwrap();
    assert_eq!(
        factum::relay::retry(&store, "parking", "big")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        factum::relay::retry(&store, "parking", "small")
            .await
            .unwrap(),
        0
    );
    wait_for_messages(&context, 4, Duration::from_secs(30)).await;
    store
        .append("big", "Probe", ExpectedVersion::Any, vec![ping(4)])
        .await
        .unwrap();
    wait_for_messages(&context, 5, Duration::from_secs(30)).await;
    assert_eq!(
        letters(store.clone()).await,
        [("huge".to_owned(), 1), ("huge".to_owned(), 2)],
        "still refused: `huge` stays parked"
    );

    // `huge` is still too large: skipped, the event behind it published.
    let skip = std::process::Command::new(env!("CARGO_BIN_EXE_factum"))
        .args(["relay", "skip", "parking", "--stream", "huge"])
        .env("DATABASE_URL", factum::testing::postgres::database_url())
        .env("FACTUM_SCHEMA", store.schema())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&skip.stdout);
    assert!(
        skip.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&skip.stderr)
    );
    assert!(said.contains("skipped huge@1"), "{said}");
    running.stop_when_done(&context, &store, 6).await;
    assert!(letters(store.clone()).await.is_empty());

    let published: Vec<(String, String)> = messages(&context)
        .await
        .iter()
        .map(|(_, h, _)| {
            (
                h[headers::STREAM_ID].clone(),
                h[headers::STREAM_VERSION].clone(),
            )
        })
        .collect();
    let of = |stream: &str| -> Vec<&str> {
        published
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(of("big"), ["1", "2", "3", "4"], "in order, none twice");
    assert_eq!(
        of("huge"),
        ["2"],
        "the refused event skipped, the one behind it published"
    );
    assert_eq!(of("small"), ["1"]);
}

#[tokio::test]
async fn a_relay_on_an_unmigrated_store_or_without_a_name_stops_with_a_typed_error() {
    let server = NatsServer::start().unwrap();
    let _context = jetstream_with(&server, -1).await;
    let store = TemporaryStore::new().await.unwrap();
    let sink = || async {
        let client = async_nats::connect(server.url()).await.unwrap();
        JetStreamSink::new(client, STREAM, "factum").await.unwrap()
    };
    let unnamed = Relay::new((*store).clone(), "", sink().await);
    match unnamed.run(std::future::pending()).await {
        Err(factum::Error::InvalidConfig(reason)) => assert!(reason.contains("name"), "{reason}"),
        other => panic!("expected an invalid configuration, got {other:?}"),
    }
    // A schema nobody migrated (it does not exist; the relay creates nothing in it).
    let unmigrated = factum::store::PostgresStore::with_schema(
        store.pool().clone(),
        "factum_test_never_migrated",
    )
    .unwrap();
    let relay = Relay::new(unmigrated, "nowhere", sink().await);
    let outcome = tokio::time::timeout(Duration::from_secs(30), relay.run(std::future::pending()))
        .await
        .expect("the relay stops rather than retrying for ever");
    match outcome {
        Err(factum::Error::NotMigrated { schema }) => {
            assert_eq!(schema, "factum_test_never_migrated")
        }
        other => panic!("expected NotMigrated, got {other:?}"),
    }
    // The sink refuses a stream that does not exist, saying how to create it.
    let client = async_nats::connect(server.url()).await.unwrap();
    match JetStreamSink::new(client, "NO_SUCH_STREAM", "factum").await {
        Err(factum::relay::SinkError::Permanent(reason)) => {
            assert!(reason.contains("factum.>"), "{reason}");
        }
        other => panic!("expected a permanent refusal, got {other:?}"),
    }
}

/// `factum relay nats` for the test's store and server, in a process of its own.
fn relay_process(server: &NatsServer, store: &TemporaryStore) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_factum"))
        .args(["relay", "nats", "--name", "crash", "--stream", STREAM])
        .args(["--url", &server.url(), "--batch-size", "500"])
        .env("DATABASE_URL", factum::testing::postgres::database_url())
        .env("FACTUM_SCHEMA", store.schema())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Every message's stream and stream version, in stream order, read with a pull consumer.
async fn stream_order(context: &jetstream::Context, count: usize) -> Vec<(String, u64, String)> {
    use futures_util::StreamExt as _;
    let stream = context.get_stream(STREAM).await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut all = Vec::with_capacity(count);
    while all.len() < count {
        let mut batch = consumer
            .fetch()
            .max_messages(1_000)
            .messages()
            .await
            .unwrap();
        let before = all.len();
        while let Some(message) = batch.next().await {
            let headers = message.unwrap().message.headers.unwrap();
            let header = |name: &str| headers.get(name).unwrap().as_str().to_owned();
            all.push((
                header(headers::STREAM_ID),
                header(headers::STREAM_VERSION).parse().unwrap(),
                header(headers::EVENT_ID),
            ));
        }
        assert!(
            all.len() > before,
            "the stream ended after {} messages",
            all.len()
        );
    }
    all
}

/// Issue 14's crash test: the relay process SIGKILLed at ten random points while it publishes
/// 50,000 events, restarted each time; JetStream ends up with each event once, in order.
#[tokio::test]
async fn a_relay_killed_at_ten_random_points_publishes_each_of_50000_events_once_in_order() {
    const EVENTS: u64 = 50_000;
    const STREAMS: u64 = 100;
    let server = NatsServer::start().unwrap();
    let context = jetstream_with(&server, -1).await;
    let store = TemporaryStore::new().await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for batch in 0..EVENTS / 50 {
                let events = (0..50).map(|n| ping(batch * 50 + n)).collect();
                let stream = format!("s-{}", batch % STREAMS);
                store
                    .append(&stream, "Probe", ExpectedVersion::Any, events)
                    .await
                    .unwrap();
            }
        })
    };
    let held = |context: jetstream::Context| async move {
        let mut stream = context.get_stream(STREAM).await.unwrap();
        stream.info().await.unwrap().state.messages
    };
    let mut relay = relay_process(&server, &store);
    let mut killed_mid_run = Vec::new();
    // Ten kill points drawn over the run, one in each eleventh of it but the last: each kill
    // falls once the stream holds that many messages and the relay has published something
    // since it started (a clock would miss a relay fast enough to finish first).
    let points = (0..10).map(|i| EVENTS * i / 11 + fastrand::u64(EVENTS / 22..EVENTS / 11));
    for point in points {
        let before = held(context.clone()).await;
        let began = std::time::Instant::now();
        loop {
            let now = held(context.clone()).await;
            if now >= point && now > before || now >= EVENTS {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "the relay publishes nothing"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        relay.kill().unwrap(); // SIGKILL
        relay.wait().unwrap();
        killed_mid_run.push(held(context.clone()).await);
        relay = relay_process(&server, &store);
    }
    writer.await.unwrap();
    wait_for_messages(&context, EVENTS, Duration::from_secs(120)).await;
    let began = std::time::Instant::now();
    while factum::relay::status(&store, "crash").await.unwrap().behind > 0 {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the relay's checkpoint lags"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.kill().unwrap();
    relay.wait().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_factum"))
        .args(["relay", "status", "crash", "--json"])
        .env("DATABASE_URL", factum::testing::postgres::database_url())
        .env("FACTUM_SCHEMA", store.schema())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["behind"], 0);
    assert_eq!(status["dead_letters"], serde_json::json!([]));
    // Counted at checkpoints: what a killed relay had acknowledged and not checkpointed is not.
    assert!(status["published"].as_u64().unwrap() > 0, "{status}");

    // The kills fell while events were still being published.
    let mid_run = killed_mid_run.iter().filter(|&&held| held < EVENTS).count();
    assert!(
        mid_run >= 10,
        "only {mid_run} of the kills fell mid-run (messages held at each: {killed_mid_run:?})"
    );
    let mut stream = context.get_stream(STREAM).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        EVENTS,
        "no event twice"
    );
    let published = stream_order(&context, usize::try_from(EVENTS).unwrap()).await;
    let ids: HashSet<&String> = published.iter().map(|(_, _, id)| id).collect();
    assert_eq!(ids.len(), published.len(), "an event was published twice");
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for (stream, version, _) in &published {
        let last = versions.entry(stream.as_str()).or_insert(0);
        assert_eq!(*version, *last + 1, "stream {stream} out of order");
        *last = *version;
    }
    assert_eq!(versions.len(), 100);
    assert!(versions.values().all(|&last| last == EVENTS / STREAMS));
}
