//! `factum serve`, the web console, in a real browser (headless Chromium over WebDriver, from
//! Debian's `chromium` and `chromium-driver`, which the test command installs): the catch-up
//! dashboard shows each projection against the head with its lag chart and the seed's alerts;
//! the dead-letter page refuses a retry without the token, and with it the parked stream drains
//! and the read model catches up; the stream browser shows envelopes, payloads and the state
//! after each event; the catalog is served. Screenshots go to `target/console/` (and
//! `docs/screenshots/` with `FACTUM_WRITE_SCREENSHOTS=1`), which the README shows.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use factum::catalog::Catalog;
use factum::cli::Cli;
use factum::projection::{ProjectionRunner, RunnerState};
use factum::saga::{CommandBus, SagaRunner};
use factum::store::SqliteStore;
use factum::testing as database;
use factum::testing::browser::{Client, Driver, Locator, screenshot};
use factum::testing::sqlite::TemporaryDatabase;
use factum::{Envelope, EventStore, ExpectedVersion, NewEvent, Repository, Tx};

#[path = "support/console.rs"]
mod console;
#[path = "support/prometheus.rs"]
mod prometheus;
#[path = "support/tenant_domain.rs"]
mod tenant_domain;

use tenant_domain::{Account, Credit, Deposited, Opened, Welcome, deposit};

/// Whether the read model refuses `account-poison`'s deposits (until it is "fixed").
static POISONED: AtomicBool = AtomicBool::new(true);

#[derive(Debug, thiserror::Error)]
#[error("account-poison's deposits are refused until the fix is deployed")]
pub struct Refused;

/// Counts the accounts opened: a runner the dashboard test keeps running, whose live state
/// the console reads from the application's metrics.
#[derive(Debug, Default)]
pub struct Openings(u64);

#[factum::projection(name = "openings")]
impl Openings {
    #[handle]
    async fn opened(
        &mut self,
        _: &Opened,
        _: &Envelope,
        _: &mut Tx<'_>,
    ) -> Result<(), std::convert::Infallible> {
        self.0 += 1;
        Ok(())
    }
}

/// Balances in the service's table.
#[derive(Debug, Default)]
pub struct Balances;

#[factum::projection(name = "balances")]
impl Balances {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if envelope.stream_id == "account-poison" && POISONED.load(Ordering::SeqCst) {
            return Err(Box::new(Refused));
        }
        sqlx::query(
            "INSERT INTO balances (account, cents) VALUES ($1, $2)
             ON CONFLICT (account) DO UPDATE SET cents = balances.cents + excluded.cents",
        )
        .bind(envelope.stream_id.as_str())
        .bind(event.cents)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    #[reset]
    async fn reset(&mut self, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM balances")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

const TOKEN: &str = "a-console-token-of-the-test";

/// Appends `events` to `stream`, wherever it stands.
async fn append(store: &SqliteStore, stream: &str, events: Vec<NewEvent>) {
    store
        .append(stream, "Account", ExpectedVersion::Any, events)
        .await
        .unwrap();
}

/// A store with three accounts, one of 10,001 deposits (above the seed's stream alert), and
/// the `balances` projection 500 events behind, with `account-poison` parked.
async fn store() -> TemporaryDatabase {
    let database = TemporaryDatabase::new().await.unwrap();
    database::execute(
        &*database,
        "CREATE TABLE balances (account TEXT PRIMARY KEY, cents INTEGER NOT NULL)",
    )
    .await
    .unwrap();
    append(
        &database,
        "account-1",
        vec![deposit(100), deposit(250), deposit(-50)],
    )
    .await;
    append(&database, "account-poison", vec![deposit(7), deposit(8)]).await;
    for _ in 0..10 {
        append(
            &database,
            "account-busy",
            (0..1_000).map(|_| deposit(1)).collect(),
        )
        .await;
    }
    append(&database, "account-busy", vec![deposit(1)]).await;
    let mut runner = ProjectionRunner::new((*database).clone(), Balances);
    runner.catch_up().await.unwrap();
    // A welcome saga credits a newly opened account: a flow across two streams.
    let opened = Opened {
        account: "a-1".into(),
        cents: 7,
    };
    append(
        &database,
        "welcome/a-1",
        vec![NewEvent::of(&opened).unwrap()],
    )
    .await;
    let bus =
        CommandBus::new().route::<Credit>(&Repository::<Account, _>::new((*database).clone()));
    let mut welcome = SagaRunner::<_, Welcome>::new((*database).clone(), bus);
    let settled = welcome.settle().await.unwrap();
    assert_eq!((settled.events, settled.commands), (1, 1));
    // And 500 deposits it has not caught up with.
    append(
        &database,
        "account-1",
        (0..500).map(|_| deposit(1)).collect(),
    )
    .await;
    database
}

/// Three appends that wait 300 ms for another connection's write lock: slow appends, recorded
/// in `factum.append.duration` as any is. Three, so that the summary's 99th percentile is a
/// slow one whatever it still holds of the setup's twenty-odd appends (one of them was not,
/// when the test ran fast enough for every setup append to stay in the summary's window).
async fn slow_appends(store: &SqliteStore) {
    use sqlx::Connection as _;
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", store.location()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(
                        "account-slow",
                        "Account",
                        ExpectedVersion::Any,
                        vec![deposit(1)],
                    )
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    for append in waiting {
        append.await.unwrap().unwrap();
    }
}

/// Starts the console on a free port (actions allowed with [`TOKEN`] when `actions`); its URL.
async fn serve(store: &SqliteStore, actions: bool) -> String {
    let url = format!("sqlite://{}", store.location());
    // With actions, the runners' live state from the test's own exporter.
    let metrics = actions.then(|| format!("http://127.0.0.1:{}/metrics", prometheus::exporter()));
    let more: Vec<&str> = match &metrics {
        Some(metrics) => vec![
            "--allow-actions",
            "--token",
            TOKEN,
            "--metrics-url",
            metrics,
        ],
        None => Vec::new(),
    };
    let cli = Cli::new()
        .aggregate::<Account>()
        .projection(|| Balances)
        .catalog(
            Catalog::new("Console test", "1.0.0").aggregate::<Account>(),
            "unused",
        );
    let port = console::serve(cli, &url, &more).await;
    format!("http://127.0.0.1:{port}")
}

async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// The text of `css` once it contains `expected` (a click's page may still be loading), or
/// a failure showing what the page holds after 10 s.
async fn text_once(client: &Client, css: &str, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if found.contains(expected) {
            return found;
        }
        if Instant::now() > deadline {
            let page = text(client, "body").await;
            panic!("{css} never held {expected:?}: {page}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn shot(client: &Client, name: &str) {
    screenshot(
        client,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        "console",
        name,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_catch_up_drains_a_parked_stream_and_browses_streams() {
    // The application's metrics, which the console scrapes for the append-latency alert.
    prometheus::exporter();
    let store = store().await;
    // A runner running in this process meanwhile (the application's): the console shows its
    // live state, which the database does not hold, from the metrics endpoint.
    let openings = ProjectionRunner::new((*store).clone(), Openings::default())
        .poll_interval(Duration::from_millis(200));
    let mut openings_state = openings.handle();
    let (stop_openings, openings_stopped) = tokio::sync::oneshot::channel::<()>();
    let openings = tokio::spawn(openings.run(async {
        openings_stopped.await.ok();
    }));
    openings_state
        .wait_for(|state| *state == RunnerState::Running)
        .await
        .unwrap();
    let console = serve(&store, true).await;
    let driver = Driver::start();
    let client = driver.browser().await;
    // The slow appends last before the dashboard: the exporter's summaries keep the last 40 to
    // 60 s of appends, and a browser can take that long to start on a loaded machine.
    slow_appends(&store).await;

    // The dashboard: the projection against the head, parked, with its chart; the alerts.
    client.goto(&format!("{console}/")).await.unwrap();
    let mut row = Vec::new();
    for cell in client.find_all(Locator::Css("tbody tr td")).await.unwrap() {
        row.push(cell.text().await.unwrap());
    }
    // Runner, state, position, head, bar, behind, oldest waiting, parked, chart.
    assert_eq!(row[0], "balances v1", "{row:?}");
    // Its state: parked, and its runner's live state from the metrics: the catch-ups of this
    // process (each test's setup runs one) retried the poison event, then parked it and ended.
    assert!(
        row[1].starts_with("parked streams not running: standing by or stopped (retried ")
            && row[1].ends_with(" times)"),
        "{row:?}"
    );
    assert_eq!(
        (row[2].as_str(), row[3].as_str()),
        ("10006", "10511"),
        "{row:?}"
    );
    assert_eq!(row[5], "505", "events behind: {row:?}");
    assert!(
        row[6].ends_with(" s"),
        "how long the oldest waited: {row:?}"
    );
    assert_eq!(row[7], "1", "{row:?}");
    assert!(
        client.find(Locator::Css("svg.lag")).await.is_ok(),
        "the lag chart"
    );
    let alerts: Vec<String> = {
        let mut all = Vec::new();
        for alert in client.find_all(Locator::Css("p.alert")).await.unwrap() {
            all.push(alert.text().await.unwrap());
        }
        all
    };
    assert!(
        alerts
            .iter()
            .any(|a| a.contains("account-busy holds 10001 events")),
        "{alerts:?}"
    );
    assert!(
        alerts.iter().any(|a| a.contains("1 parked stream in")),
        "{alerts:?}"
    );
    assert!(
        alerts.iter().any(|a| a.contains("aggregate=\"Account\"")
            && a.contains("ms at the 99th percentile (threshold 100 ms)")),
        "{alerts:?}"
    );
    // The runners reporting to the metrics endpoint: `openings` runs, and its row among the
    // projections says so too.
    let runners = text(&client, "main").await;
    assert!(runners.contains("Runners reporting"), "{runners}");
    let mut tables = Vec::new();
    for table in client.find_all(Locator::Css("table")).await.unwrap() {
        tables.push(table.text().await.unwrap());
    }
    assert!(
        tables.iter().any(|t| t.contains("Live state")
            && t.lines().any(|l| l.contains("projection openings running"))),
        "{tables:?}"
    );
    let openings_row = row
        .iter()
        .position(|cell| cell == "openings v1")
        .unwrap_or_else(|| panic!("openings' row: {row:?}"));
    assert!(
        row[openings_row + 1].ends_with(" running"),
        "openings' state: {row:?}"
    );
    stop_openings.send(()).unwrap();
    openings.await.unwrap().unwrap();
    // The saga: its runner's checkpoint among the runners, its instance and its sent command.
    let sagas: Vec<String> = {
        let mut cells = Vec::new();
        for table in client.find_all(Locator::Css("table")).await.unwrap() {
            cells.push(table.text().await.unwrap());
        }
        cells
    };
    assert!(
        sagas
            .iter()
            .any(|t| t.contains("Active") && t.contains("welcome")),
        "{sagas:?}"
    );
    shot(&client, "console-dashboard.png").await;

    // The dead letters: a retry without the token is refused, and changes nothing.
    client
        .goto(&format!("{console}/dead-letters"))
        .await
        .unwrap();
    let parked = text(&client, "tbody tr").await;
    assert!(parked.contains("account-poison"), "{parked}");
    assert!(parked.contains("refused until the fix"), "{parked}");
    shot(&client, "console-dead-letters.png").await;
    client
        .find(Locator::Css(
            "button[name=retry][data-stream=account-poison]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_once(&client, "main", "wrong token").await;

    // With the fix deployed and the token given, the stream drains.
    POISONED.store(false, Ordering::SeqCst);
    client
        .goto(&format!("{console}/dead-letters"))
        .await
        .unwrap();
    client
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    client
        .find(Locator::Css(
            "button[name=retry][data-stream=account-poison]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_once(
        &client,
        "#message",
        "account-poison drained: 2 events handled",
    )
    .await;
    assert!(text(&client, "#empty").await.contains("No parked streams"));
    let balances: Vec<(String, i64)> = database::fetch_all(
        &*store,
        "SELECT account, cents FROM balances WHERE account = 'account-poison'",
    )
    .await
    .unwrap();
    assert_eq!(balances, [("account-poison".to_owned(), 15)]);
    shot(&client, "console-drained.png").await;

    // The stream browser: envelopes, payloads, the state after each event.
    client
        .goto(&format!("{console}/stream?id=account-1"))
        .await
        .unwrap();
    let rows = client.find_all(Locator::Css("tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 503);
    let third = rows[2].text().await.unwrap();
    assert!(third.contains("{\"cents\":-50}"), "{third}");
    assert!(third.contains("{\"cents\":300}"), "{third}");
    shot(&client, "console-stream.png").await;

    // The saga's flow: from the credited stream to the events of its correlation, across
    // both streams.
    client
        .goto(&format!("{console}/stream?id=bonus/a-1"))
        .await
        .unwrap();
    client
        .find(Locator::Css("a[href^='/correlation']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let flow = text_once(&client, "main", "2 events of correlation").await;
    assert!(flow.contains("across 2 streams"), "{flow}");
    assert!(
        flow.contains("welcome/a-1") && flow.contains("bonus/a-1"),
        "{flow}"
    );
    shot(&client, "console-correlation.png").await;

    // The catalog, served by the console.
    client.goto(&format!("{console}/catalog/")).await.unwrap();
    let catalog = text(&client, "body").await;
    assert!(catalog.contains("Deposited"), "{catalog}");
    shot(&client, "console-catalog.png").await;
    client.close().await.unwrap();
}

/// Without `--allow-actions` the console only shows: no buttons, and a posted retry is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_console_refuses_actions() {
    let store = store().await;
    let console = serve(&store, false).await;
    let driver = Driver::start();
    let client = driver.browser().await;
    client
        .goto(&format!("{console}/dead-letters"))
        .await
        .unwrap();
    let parked = text(&client, "tbody tr").await;
    assert!(parked.contains("read-only"), "{parked}");
    assert!(
        client
            .find(Locator::Css("button[name=retry]"))
            .await
            .is_err()
    );
    // A form posted anyway (as a script would) is refused.
    client
        .execute(
            "const f = document.createElement('form'); f.method = 'post';
             f.action = '/dead-letters/retry';
             for (const [k, v] of [['projection','balances'],['stream','account-poison'],['token','x']]) {
               const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i);
             }
             document.body.appendChild(f); f.submit();",
            vec![],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = text(&client, "body").await;
        if body.contains("read-only") && body.contains("Something went wrong") {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.close().await.unwrap();
}

/// `--tenant` on SQLite is refused with what to do: the console's pages read the tables with
/// SQL of their own, which SQLite scopes by no row-level security (another tenant's streams
/// would show).
#[tokio::test]
async fn a_tenants_console_is_refused_on_sqlite() {
    let database = TemporaryDatabase::new().await.unwrap();
    let url = format!("sqlite://{}", database.location());
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_factum"))
        .args(["--database-url", &url, "serve", "--tenant", "acme"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("--tenant needs a PostgreSQL store")
            && said.contains("serve the whole store"),
        "{said}"
    );
}
