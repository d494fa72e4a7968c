//! `factum serve` on PostgreSQL, over HTTP (the browser tests are `console.rs`'s):
//!
//! - It rides out a restart of its database: on a throwaway cluster of its own, stopped under
//!   the running console and started again. While the server is down each page says the store
//!   does not answer for now and to reload (status 503, once the pool gave up waiting for a
//!   connection: 10 s) and the console keeps serving; once the server is back the pages come
//!   back by themselves, and the lag chart, sampled all along, shows a sample taken after the
//!   restart.
//! - Its dashboard charts a relay's lag; its dead-letter page lists the streams a relay's
//!   broker refused, and with the token its Retry has the running relay publish them again.
//! - A tenant's console shows that tenant's streams and projections, and none of another's.
//! - The console of a store with tenants shows every tenant's streams, and each tenant's
//!   runners with their tenant and their own lag, connected as the application role or as a
//!   superuser.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use factum::cli::Cli;
use factum::event::Payload;
use factum::projection::ProjectionRunner;
use factum::relay::{JetStreamSink, Relay};
use factum::store::PostgresStore;
use factum::testing::nats::NatsServer;
use factum::testing::postgres::{Cluster, LeastPrivilege, TemporaryStore};
use factum::{EventStore, ExpectedVersion, NewEvent};
use tokio::sync::oneshot;

#[path = "support/console.rs"]
mod console;
#[path = "support/http.rs"]
mod http;
#[path = "support/tenant_domain.rs"]
mod tenant_domain;

use tenant_domain::{Ledger, deposit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_rides_out_a_restart_of_its_database() {
    let cluster = Cluster::start().await.unwrap();
    let pool = sqlx::PgPool::connect(&cluster.url()).await.unwrap();
    let store = PostgresStore::with_schema(pool, "factum").unwrap();
    store.migrate().await.unwrap();

    // The ledger has handled 3 deposits; 2 more wait.
    deposits(&store, 3).await;
    ProjectionRunner::new(store.clone(), Ledger::default())
        .catch_up()
        .await
        .unwrap();
    deposits(&store, 2).await;

    let port = serve(&cluster.url(), &[]).await;
    let page = until(port, "/", |page| page.contains("at most 2")).await;
    assert!(page.contains("ledger v1"), "{page}");

    // Down: every page says the store does not answer and to reload; the console still
    // answers.
    cluster.crash().await.unwrap();
    let paths = ["/", "/dead-letters", "/stream?id=account-1"];
    let pages = tokio::join!(
        http::get(port, paths[0]),
        http::get(port, paths[1]),
        http::get(port, paths[2])
    );
    for (path, (status, page)) in paths.into_iter().zip([pages.0, pages.1, pages.2]) {
        assert_eq!(status, 503, "{path}: {page}");
        assert!(
            page.contains("The store does not answer for now") && page.contains("reload this page"),
            "{path}: {page}"
        );
    }
    // The sampler meets the outage too (it samples every 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Back: 10 more deposits wait (12 in all). The chart's highest sample can only come from
    // a sample taken after the restart.
    cluster.resume().await.unwrap();
    deposits(&store, 10).await;
    let page = until(port, "/", |page| page.contains("at most 12")).await;
    assert!(page.contains("ledger v1"), "{page}");
    let (status, page) = http::get(port, "/stream?id=account-1").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Deposited"), "{page}");
}

/// Appends `n` deposits to `account-1`, each retried until it is stored (the same event: an
/// append a restart interrupts is never stored twice).
async fn deposits(store: &PostgresStore, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..n {
        let event = deposit(1);
        while let Err(error) = store
            .append(
                "account-1",
                "Account",
                ExpectedVersion::Any,
                vec![event.clone()],
            )
            .await
        {
            assert!(
                Instant::now() < deadline,
                "the deposit is not stored: {error}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Starts the console on the store at `url`, with the options `more`; its port.
async fn serve(url: &str, more: &[&str]) -> u16 {
    console::serve(Cli::new(), url, more).await
}

/// The page at `path` once it is served (status 200) and `shows` holds, within 30 s.
async fn until(port: u16, path: &str, shows: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, page) = http::get(port, path).await;
        if status == 200 && shows(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not come back (status {status}): {page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The console's token in the relay test.
const TOKEN: &str = "relay-console-token-0123";

/// A relay's parked stream on the dead-letter page: refused by the broker (larger than its
/// stream takes), with the event waiting behind it; a retry without the right token changes
/// nothing; once the broker takes larger messages, Retry with the token has the running relay
/// publish both, in order, and the page shows none left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_retries_a_stream_a_relays_broker_refused() {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = jetstream::new(client.clone());
    context
        .create_stream(stream::Config {
            name: "CONSOLE".into(),
            subjects: vec!["factum.>".into()],
            max_message_size: 1024,
            ..Default::default()
        })
        .await
        .unwrap();
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
            vec![sized(2_000), sized(1)],
        )
        .await
        .unwrap();
    store
        .append("small", "Probe", ExpectedVersion::Any, vec![sized(1)])
        .await
        .unwrap();
    let sink = JetStreamSink::new(client, "CONSOLE", "factum")
        .await
        .unwrap();
    let relay =
        Relay::new((*store).clone(), "to-nats", sink).retry_backoff(Duration::from_millis(20));
    let (stop, stopped) = oneshot::channel::<()>();
    let relaying = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    let letters = || async {
        factum::relay::status(&store, "to-nats")
            .await
            .unwrap()
            .dead_letters
            .len()
    };
    let until_letters = |done: fn(usize) -> bool, what: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(letters().await) {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    until_letters(|n| n >= 2, "the stream is not parked").await;

    let url = factum::testing::postgres::database_url();
    let schema = store.schema().to_owned();
    let port = serve(
        &url,
        &["--schema", &schema, "--allow-actions", "--token", TOKEN],
    )
    .await;
    // The dashboard charts the relay's lag beside the projections'.
    let page = until(port, "/", |page| {
        page.split_once("<h2>Relays</h2>")
            .is_some_and(|(_, relays)| relays.contains("<svg class=\"lag\""))
    })
    .await;
    assert!(page.contains("dead letters"), "{page}");
    let page = until(port, "/dead-letters", |page| {
        page.contains("<h2>Relays</h2>")
    })
    .await;
    for shown in [
        "to-nats",
        "/stream?id=big",
        "takes at most 1024",
        "action=\"/relay-dead-letters/retry\"",
    ] {
        assert!(page.contains(shown), "{shown}: {page}");
    }

    // The wrong token: refused, nothing marked.
    let (status, page) = http::post_form(
        port,
        "/relay-dead-letters/retry",
        &[
            ("relay", "to-nats"),
            ("stream", "big"),
            ("token", "wrong-token"),
        ],
    )
    .await;
    assert_eq!(status, 401, "{page}");
    let marked: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{schema}\".relay_dead_letters WHERE retry_requested"
    )))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(marked, 0);

    // The broker takes 4 KiB now: Retry, and the relay publishes the stream, in order.
    let mut config = stream_info(&context).await.config;
    config.max_message_size = 4096;
    context.update_stream(config).await.unwrap();
    let (status, page) = http::post_form(
        port,
        "/relay-dead-letters/retry",
        &[("relay", "to-nats"), ("stream", "big"), ("token", TOKEN)],
    )
    .await;
    assert_eq!(status, 303, "{page}");
    until_letters(|n| n == 0, "the relay did not publish the stream again").await;
    let page = until(port, "/dead-letters", |page| {
        page.contains("No event refused by a broker")
    })
    .await;
    assert!(page.contains("No parked streams"), "{page}");
    stop.send(()).unwrap();
    relaying.await.unwrap().unwrap();
    assert_eq!(
        stream_info(&context).await.state.messages,
        3,
        "each event once"
    );
}

/// What the relay test's JetStream stream holds, and how it is configured.
async fn stream_info(context: &jetstream::Context) -> stream::Info {
    context
        .get_stream("CONSOLE")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone()
}

/// `--tenant`: the console of one tenant's store, connected as the application role, whose
/// row-level security keeps the other tenants out of every page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_console_shows_its_streams_and_projections_only() {
    let roles = LeastPrivilege::new().await.unwrap();
    let acme = roles.application().for_tenant("acme").await.unwrap();
    let globex = roles.application().for_tenant("globex").await.unwrap();
    deposits_to(&acme, "account-acme").await;
    deposits_to(&globex, "account-globex").await;
    ProjectionRunner::new(acme.clone(), Ledger::default())
        .catch_up()
        .await
        .unwrap();
    let schema = roles.owner().schema().to_owned();
    let port = serve(
        roles.application_url(),
        &["--schema", &schema, "--tenant", "acme"],
    )
    .await;

    let (status, page) = http::get(port, "/").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("tenant `acme`") && page.contains("ledger v1"),
        "{page}"
    );
    let (status, page) = http::get(port, "/streams").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("account-acme"), "{page}");
    assert!(!page.contains("account-globex"), "{page}");
    let (status, page) = http::get(port, "/stream?id=account-acme").await;
    assert_eq!((status, page.contains("Deposited")), (200, true), "{page}");
    let (_, page) = http::get(port, "/stream?id=account-globex").await;
    assert!(
        !page.contains("Deposited"),
        "another tenant's stream: {page}"
    );

    // Globex's console: its stream, and no projection (acme's ledger is acme's).
    let port = serve(
        roles.application_url(),
        &["--schema", &schema, "--tenant", "globex"],
    )
    .await;
    let (_, page) = http::get(port, "/").await;
    assert!(
        page.contains("tenant `globex`") && !page.contains("ledger v1"),
        "{page}"
    );
    let (_, page) = http::get(port, "/streams").await;
    assert!(
        page.contains("account-globex") && !page.contains("account-acme"),
        "{page}"
    );
}

/// Without `--tenant`, the console of a store with tenants: every tenant's streams, and each
/// runner's row naming its tenant, with the events behind that its runner reads (globex's
/// deposits come after acme's checkpoint, yet acme's ledger is caught up). The same as the
/// application role, bound by row-level security, and as a superuser, whom it does not bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_of_a_store_with_tenants_names_each_tenants_runners() {
    let roles = LeastPrivilege::new().await.unwrap();
    let acme = roles.application().for_tenant("acme").await.unwrap();
    let globex = roles.application().for_tenant("globex").await.unwrap();
    let across = roles.application().across_tenants();
    deposits_to(&acme, "account-acme").await;
    deposits_to(&globex, "account-globex").await;
    for store in [&acme, &globex, &across] {
        ProjectionRunner::new(store.clone(), Ledger::default())
            .catch_up()
            .await
            .unwrap();
    }
    // Two more of globex's, after every checkpoint: globex's ledger and the ledger across
    // tenants have them to read, acme's has none.
    deposits_to(&globex, "account-globex").await;

    let schema = roles.owner().schema().to_owned();
    let superuser = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    for url in [roles.application_url(), superuser.as_str()] {
        let port = serve(url, &["--schema", &schema]).await;
        let (status, page) = http::get(port, "/").await;
        assert_eq!(status, 200, "{page}");
        assert!(
            page.contains("every tenant") && page.contains("<th>Tenant</th>"),
            "{url}: {page}"
        );
        // A runner caught up to the end of a commit stands at that commit's last event.
        assert!(!page.contains(&i64::MAX.to_string()), "{url}: {page}");
        let ledgers: Vec<&str> = page
            .split("<tr>")
            .filter(|row| row.contains("<td>ledger v1</td>"))
            .collect();
        assert_eq!(ledgers.len(), 3, "{url}: one row per tenancy: {page}");
        for (tenant, state, behind) in [
            ("acme", "caught up", 0),
            ("globex", "catching up", 2),
            ("across tenants", "catching up", 2),
        ] {
            let row = ledgers
                .iter()
                .find(|row| row.starts_with(&format!("<td>{tenant}</td>")))
                .unwrap_or_else(|| panic!("{url}: no ledger of {tenant}: {page}"));
            assert!(
                row.contains(&format!(">{state}<"))
                    && row.contains(&format!("<td class=\"n\">{behind}</td>")),
                "{url}: {tenant}'s ledger, {state}, {behind} behind: {row}"
            );
        }
        let (_, page) = http::get(port, "/streams").await;
        assert!(
            page.contains("account-acme") && page.contains("account-globex"),
            "{url}: {page}"
        );
    }
}

/// Two deposits to `stream` of a tenant's store.
async fn deposits_to(store: &PostgresStore, stream: &str) {
    store
        .append(
            stream,
            "Account",
            ExpectedVersion::Any,
            vec![deposit(1), deposit(2)],
        )
        .await
        .unwrap();
}
