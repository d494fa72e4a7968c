//! Metrics (issue 16, part 1): a Prometheus endpoint, installed as an application would
//! (`metrics-exporter-prometheus` with its HTTP listener), scraped over HTTP while a projection
//! and a saga run: appends, conflicts, loads and snapshot hits, a projection's batches,
//! position and lag, the runners' states, a saga's delivered commands and outbox depth, and
//! PostgreSQL's feed horizon age. The recorder is global: the tests share one, installed once.

use std::time::Duration;

use factum::projection::{ProjectionRunner, RunnerState};
use factum::saga::{CommandBus, SagaRunner};
use factum::store::SqliteStore;
use factum::{Envelope, Error, EventStore, ExpectedVersion, NewEvent, Repository, Tx};

#[path = "support/http.rs"]
mod http;
#[path = "support/prometheus.rs"]
mod prometheus;

use prometheus::exporter;

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub cents: i64,
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub account: String,
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Deposited(Deposited),
    Opened(Opened),
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Account {
    pub cents: i64,
}

#[derive(Debug)]
pub struct Deposit(pub i64);

/// A welcome bonus, sent by the saga.
#[factum::command]
#[derive(Debug, Clone, PartialEq)]
pub struct Credit {
    pub cents: i64,
}

#[factum::aggregate(events = AccountEvent)]
impl Account {
    #[apply]
    fn deposited(&mut self, event: &Deposited) {
        self.cents += event.cents;
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}

    #[command]
    fn deposit(&self, command: &Deposit) -> Result<Deposited, std::convert::Infallible> {
        Ok(Deposited { cents: command.0 })
    }

    #[command]
    fn credit(&self, command: &Credit) -> Result<Deposited, std::convert::Infallible> {
        Ok(Deposited {
            cents: command.cents,
        })
    }
}

#[derive(Debug, Default)]
struct Ledger {
    cents: i64,
}

#[factum::projection(name = "ledger")]
impl Ledger {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        _: &Envelope,
        _: &mut Tx<'_>,
    ) -> Result<(), std::convert::Infallible> {
        self.cents += event.cents;
        Ok(())
    }
}

#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Welcome {
    pub account: String,
}

#[factum::saga(name = "welcome", commands(Credit))]
impl Welcome {
    #[start(by = account)]
    fn opened(&mut self, event: &Opened, context: &mut factum::saga::SagaContext<Self>) {
        self.account.clone_from(&event.account);
        context.send(event.account.clone(), Credit { cents: 5 });
    }
}

/// The endpoint's text.
async fn scrape(port: u16) -> String {
    let (status, text) = http::get(port, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    text
}

/// The value of the sample `name{labels}` in `text` (labels as the exporter writes them).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let matches = metric == name
                && labels
                    .iter()
                    .all(|(label, value)| rest.contains(&format!("{label}=\"{value}\"")));
            matches.then(|| value.parse().ok()).flatten()
        })
}

/// PostgreSQL: a transaction left open holds the feed's horizon back, and the gauge says for
/// how long (read by `horizon()`, which running runners call every few seconds).
#[tokio::test]
async fn the_feed_horizon_age_shows_a_transaction_holding_the_feed() {
    let port = exporter();
    let store = factum::testing::postgres::TemporaryStore::new()
        .await
        .unwrap();
    let mut open = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut open,
            "held",
            "Account",
            ExpectedVersion::Any,
            vec![NewEvent::of(&Deposited { cents: 1 }).unwrap()],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    store.horizon().await.unwrap();
    let schema = [("schema", store.schema())];
    let held = sample(&scrape(port).await, "factum_feed_horizon_age", &schema).unwrap();
    // At least ours: the oldest open transaction of the cluster (another test's may be older).
    assert!(held >= 1.0, "{held}");
    open.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_scrape_during_a_run_shows_appends_loads_and_runners() {
    let port = exporter();

    let store = SqliteStore::in_memory().await.unwrap();
    store.migrate().await.unwrap();
    let accounts = Repository::<Account, _>::new(store.clone()).snapshot_every(5);
    for cents in 1..=10 {
        accounts.execute("acc-1", Deposit(cents)).await.unwrap();
    }
    // A conflict: a writer that expects the stream not to exist yet.
    let refused = store
        .append(
            "acc-1",
            "Account",
            ExpectedVersion::NoStream,
            vec![NewEvent::of(&Deposited { cents: 0 }).unwrap()],
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Conflict { .. }), "{refused:?}");
    // Loads: from the snapshot taken at version 10.
    for _ in 0..3 {
        assert_eq!(accounts.load("acc-1").await.unwrap().state.cents, 55);
    }
    store
        .append(
            "acc-2",
            "Account",
            ExpectedVersion::NoStream,
            vec![
                NewEvent::of(&Opened {
                    account: "acc-2".into(),
                })
                .unwrap(),
            ],
        )
        .await
        .unwrap();

    // The runners, running.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let ledger = ProjectionRunner::new(store.clone(), Ledger::default())
        .poll_interval(Duration::from_millis(50));
    let handle = ledger.handle();
    let ledger = tokio::spawn(ledger.run(shutdown()));
    let welcome =
        SagaRunner::<_, Welcome>::new(store.clone(), CommandBus::new().route::<Credit>(&accounts))
            .poll_interval(Duration::from_millis(50));
    let saga = welcome.handle();
    let welcome = tokio::spawn(welcome.run(shutdown()));

    // Scrape until the run shows: the bonus delivered, the ledger caught up with it.
    let began = std::time::Instant::now();
    let text = loop {
        let caught_up = matches!(
            handle.status().await,
            Ok(status) if status.event_lag == 0 && status.checkpoint.position >= 12
        );
        let text = scrape(port).await;
        let delivered = sample(&text, "factum_saga_commands", &[("saga", "welcome")]);
        if (caught_up && delivered == Some(1.0)) || began.elapsed() > Duration::from_secs(20) {
            break scrape(port).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(handle.state(), RunnerState::Running);
    let status = saga.status().await.unwrap();
    assert_eq!(status.pending_commands, 0);

    let store_account = [("store", "sqlite"), ("aggregate", "Account")];
    // 10 deposits, the opening, and the saga's credit.
    assert_eq!(
        sample(&text, "factum_append_events", &store_account),
        Some(12.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "factum_append_conflicts", &store_account),
        Some(1.0)
    );
    let appends = [
        ("store", "sqlite"),
        ("aggregate", "Account"),
        ("outcome", "ok"),
    ];
    assert_eq!(
        sample(&text, "factum_append_duration_count", &appends),
        Some(12.0),
        "{text}"
    );
    assert!(sample(&text, "factum_append_duration_sum", &appends).is_some_and(|s| s > 0.0));
    let account = [("aggregate", "Account")];
    // Each command loads (the repository has no cache here), and three loads more.
    let loads = sample(&text, "factum_load_duration_count", &account).unwrap();
    assert!(loads >= 13.0, "{loads}");
    assert!(sample(&text, "factum_load_snapshot_hits", &account).unwrap() >= 3.0);
    let ledger_label = [("projection", "ledger")];
    // It reads its types only: the 10 deposits and the credit (not the opening).
    assert_eq!(
        sample(&text, "factum_projection_events", &ledger_label),
        Some(11.0)
    );
    assert_eq!(
        sample(&text, "factum_projection_position", &ledger_label),
        Some(12.0)
    );
    assert_eq!(
        sample(&text, "factum_projection_head", &ledger_label),
        Some(12.0)
    );
    assert_eq!(
        sample(&text, "factum_projection_lag_events", &ledger_label),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "factum_projection_parked_streams", &ledger_label),
        Some(0.0)
    );
    assert!(
        sample(
            &text,
            "factum_projection_batch_duration_count",
            &ledger_label
        )
        .unwrap()
            >= 1.0
    );
    // The saga's event side is a projection runner under its name.
    assert!(
        sample(
            &text,
            "factum_projection_events",
            &[("projection", "welcome")]
        )
        .is_some()
    );
    assert_eq!(
        sample(
            &text,
            "factum_runner_running",
            &[("kind", "projection"), ("name", "ledger")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "factum_runner_running",
            &[("kind", "saga"), ("name", "welcome")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "factum_saga_commands", &[("saga", "welcome")]),
        Some(1.0)
    );
    assert!(text.contains("# HELP factum_append_duration"), "{text}");

    stop.send_replace(true);
    ledger.await.unwrap().unwrap();
    welcome.await.unwrap().unwrap();
    // Stopped: no longer running.
    let text = scrape(port).await;
    assert_eq!(
        sample(
            &text,
            "factum_runner_running",
            &[("kind", "projection"), ("name", "ledger")]
        ),
        Some(0.0)
    );
}
