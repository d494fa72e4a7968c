//! `factum serve` rides out a restart of its database: on a throwaway PostgreSQL cluster of its
//! own, stopped under the running console and started again. While the server is down each
//! page says the store does not answer for now and to reload (status 503, once the pool gave
//! up waiting for a connection: 10 s) and the console keeps serving; once the server is back
//! the pages come back by themselves, and the lag chart, sampled all along, shows a sample
//! taken after the restart.

use std::time::{Duration, Instant};

use factum::cli::Cli;
use factum::projection::ProjectionRunner;
use factum::store::PostgresStore;
use factum::testing::postgres::Cluster;
use factum::{EventStore, ExpectedVersion};

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

    let port = serve(&cluster.url()).await;
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

/// Starts the console on the cluster, on a free port; the port.
async fn serve(url: &str) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let args = [
        "factum",
        "--database-url",
        url,
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]
    .map(str::to_owned);
    // The tool runs on a runtime of its own, as the `factum` process would.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
            .block_on(Cli::new().run_with(args))
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the console did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    port
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
