//! The `factum` command-line tool against both stores: every subcommand, tables and `--json`,
//! and one clear line (and a non-zero exit code) for a bad URL, an unmigrated database, an
//! unknown stream, projection or aggregate type.

use std::process::Command;
use std::time::Duration;

use factum::projection::ProjectionRunner;
use factum::testing::postgres::TemporaryStore;
use factum::testing::sqlite::TemporaryDatabase;
use factum::{Envelope, EventStore, ExpectedVersion, FeedQuery, NewEvent, Payload};

#[factum::event]
#[derive(Debug)]
pub struct Pinged {
    pub n: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("13 is unlucky")]
pub struct Unlucky;

/// Fails on ping 13.
#[derive(Debug, Default)]
pub struct Pings;

#[factum::projection(name = "pings")]
impl Pings {
    #[handle]
    async fn pinged(
        &mut self,
        event: &Pinged,
        _: &Envelope,
        _: &mut factum::Tx<'_>,
    ) -> Result<(), Unlucky> {
        if event.n == 13 { Err(Unlucky) } else { Ok(()) }
    }
}

fn ping(n: u64) -> NewEvent {
    NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({ "n": n })).unwrap(),
    )
    .actor("ops")
}

async fn seed(store: &impl EventStore) {
    store
        .append(
            "ping-a",
            "Pinger",
            ExpectedVersion::NoStream,
            vec![ping(1), ping(2), ping(3)],
        )
        .await
        .unwrap();
    store
        .append(
            "ping-b",
            "Pinger",
            ExpectedVersion::NoStream,
            vec![ping(13), ping(14)],
        )
        .await
        .unwrap();
}

/// Runs the tool on a store; returns the exit code, stdout and stderr.
fn factum(url: &str, schema: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--database-url", url, "--schema", schema];
    all.extend_from_slice(args);
    run(&all)
}

/// Runs the tool with `args` alone; returns the exit code, stdout and stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_factum"))
        .env_remove("DATABASE_URL")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The checks every store must pass (its `pings` runner parked `ping-b` at the poison).
fn check_store(url: &str, schema: &str) {
    // stats
    let (code, out, err) = factum(url, schema, &["stats"]);
    assert_eq!(code, 0, "{err}");
    for line in ["events: 5", "streams: 2", "ping-a  3", "Pinged  5"] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    let (_, out, _) = factum(url, schema, &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["events"], 5);
    assert_eq!(
        stats["largest_streams"][0],
        serde_json::json!(["ping-a", 3])
    );
    assert!(stats["size_bytes"].as_u64().unwrap() > 0);

    // stream show
    let (code, out, err) = factum(url, schema, &["stream", "show", "ping-a"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stream `ping-a` (Pinger): 3 events"), "{out}");
    assert!(out.contains("not registered in this tool"), "{out}");
    assert!(out.contains("2 Pinged: {\"n\":2}"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("3 ") && l.contains("Pinged") && l.contains("ops")),
        "{out}"
    );
    let (_, out, _) = factum(url, schema, &["stream", "show", "ping-b", "--json"]);
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events[1]["stream_version"], 2);
    assert_eq!(events[1]["event"]["n"], 14);
    assert_eq!(events[1]["actor"], "ops");

    // feed tail, not following
    let (code, out, err) = factum(url, schema, &["feed", "tail", "--no-follow"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .contains("ping-b@2  Pinged  {\"n\":14}"),
        "{out}"
    );
    let (_, out, _) = factum(
        url,
        schema,
        &["feed", "tail", "--no-follow", "--limit", "2", "--json"],
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["stream_id"], "ping-a");

    let (_, out, _) = factum(url, schema, &["feed", "tail", "--no-follow", "--from", "3"]);
    let positions: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(positions, ["4", "5"], "after global position 3:\n{out}");

    // projections status, dlq list
    let (code, out, err) = factum(url, schema, &["projections", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("pings") && l.contains("(caught up)")),
        "{out}"
    );
    let (_, out, _) = factum(url, schema, &["projections", "status", "pings", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status[0]["events_after"], 0);
    assert_eq!(status[0]["parked_events"], 2);
    let (code, out, _) = factum(url, schema, &["dlq", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("pings") && l.contains("ping-b") && l.contains("13 is unlucky")),
        "{out}"
    );

    // one line for what is wrong
    let (code, _, err) = factum(url, schema, &["stream", "show", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "error: stream `nope` has no events: check its id (`factum stats` lists the largest streams)"
    );
    let (code, _, err) = factum(url, schema, &["projections", "status", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "error: no projection `nope` in this store (known: pings)"
    );
    let (code, _, err) = factum(url, schema, &["state", "ping-a", "--at-version", "2"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("aggregate type `Pinger` is not registered in this tool"),
        "{err}"
    );
    let (code, _, err) = factum(url, schema, &["state", "ping-a"]);
    assert_eq!(code, 2, "a malformed command line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_on_sqlite() {
    let database = TemporaryDatabase::new().await.unwrap();
    seed(&*database).await;
    let mut runner = ProjectionRunner::new((*database).clone(), Pings).retries(0, Duration::ZERO);
    runner.catch_up().await.unwrap();
    let url = format!("sqlite://{}", database.path().display());
    check_store(&url, "factum");
    follow(&*database, &url, "factum").await;
}

/// `feed tail` follows the feed: events appended while it runs are printed.
async fn follow(store: &impl EventStore, url: &str, schema: &str) {
    let child = Command::new(env!("CARGO_BIN_EXE_factum"))
        .env_remove("DATABASE_URL")
        .args(["--database-url", url, "--schema", schema])
        .args(["feed", "tail", "--from", "0", "--limit", "7"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    store
        .append(
            "ping-c",
            "Pinger",
            ExpectedVersion::NoStream,
            vec![ping(20), ping(21)],
        )
        .await
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    assert!(lines[6].contains("ping-c@2  Pinged  {\"n\":21}"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_on_postgres() {
    let store = TemporaryStore::new().await.unwrap();
    seed(&*store).await;
    let mut runner = ProjectionRunner::new((*store).clone(), Pings).retries(0, Duration::ZERO);
    runner.catch_up().await.unwrap();
    check_store(store.url(), store.schema());
    follow(&*store, store.url(), store.schema()).await;
}

#[tokio::test]
async fn bad_urls_and_unmigrated_databases_get_one_clear_line() {
    let (code, _, err) = factum("mysql://db/app", "factum", &["stats"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "error: `mysql://db/app` is not a store URL: use postgres://user@host/database or sqlite://path/to/file.db"
    );
    let (code, _, err) = factum(
        "postgres://alice:secret@127.0.0.1:1/app",
        "factum",
        &["stats"],
    );
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot open postgres://alice:***@127.0.0.1:1/app:"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    let (code, _, err) = factum(
        "postgres://alice@127.0.0.1:1/app?sslmode=disable&password=secret",
        "factum",
        &["stats"],
    );
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "error: cannot open postgres://alice@127.0.0.1:1/app?sslmode=disable&password=***:"
        ),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    let (code, _, err) = factum("sqlite://no/such/file.db", "factum", &["stats"]);
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "error: cannot open sqlite://no/such/file.db: the file does not exist"
    );

    // A database with no store in it.
    let empty = TemporaryDatabase::unmigrated().await.unwrap();
    let url = format!("sqlite://{}", empty.path().display());
    let (code, _, err) = factum(&url, "factum", &["stats"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("holds no Factum store: run your application once"),
        "{err}"
    );

    let temporary = TemporaryStore::new().await.unwrap();
    let (code, _, err) = factum(temporary.url(), "no_store_here", &["stats"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the PostgreSQL schema `no_store_here` holds no Factum store"),
        "{err}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_factum"))
        .env_remove("DATABASE_URL")
        .arg("stats")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no store given: set DATABASE_URL"));
}

/// `export` writes the feed as JSON Lines (every tenant's, each line naming its event's, or
/// one tenant's with `--tenant`); `import` loads it into an empty store, here a SQLite file's
/// feed into a PostgreSQL schema: the same events, each of the same tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_through_the_cli() {
    let source = TemporaryDatabase::new().await.unwrap();
    seed(&*source).await;
    let acme = source.for_tenant("acme").await.unwrap();
    acme.append(
        "acme/ping",
        "Pinger",
        ExpectedVersion::NoStream,
        vec![ping(7)],
    )
    .await
    .unwrap();
    let source_url = format!("sqlite://{}", source.path().display());
    let file = std::env::temp_dir().join(format!("factum-export-{}.jsonl", uuid::Uuid::now_v7()));
    let run = |args: Vec<String>| {
        let output = Command::new(env!("CARGO_BIN_EXE_factum"))
            .env_remove("DATABASE_URL")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let file_arg = file.display().to_string();
    let said = run(vec![
        "--database-url".into(),
        source_url.clone(),
        "export".into(),
        "--output".into(),
        file_arg.clone(),
    ]);
    let stored = source
        .across_tenants()
        .read_feed(&FeedQuery::from_start().limit(1000))
        .await
        .unwrap()
        .events;
    assert!(
        said.contains(&format!("{} events exported", stored.len())),
        "{said}"
    );
    let acme_only = run(vec![
        "--database-url".into(),
        source_url.clone(),
        "export".into(),
        "--tenant".into(),
        "acme".into(),
    ]);
    assert_eq!(acme_only.lines().count(), 1, "{acme_only}");
    assert!(acme_only.contains("\"tenant\":\"acme\""), "{acme_only}");

    let postgres = factum::testing::postgres::TemporaryStore::new()
        .await
        .unwrap();
    let said = run(vec![
        "--database-url".into(),
        postgres.url().to_owned(),
        "--schema".into(),
        postgres.schema().to_owned(),
        "import".into(),
        "--input".into(),
        file_arg.clone(),
    ]);
    assert!(
        said.contains(&format!("{} events imported", stored.len())),
        "{said}"
    );
    let copied = postgres
        .read_feed(&FeedQuery::from_start().limit(1000))
        .await
        .unwrap()
        .events;
    let ids = |events: &[factum::RecordedEvent]| {
        events
            .iter()
            .map(|e| {
                (
                    e.event_id,
                    e.stream_id.clone(),
                    e.stream_version,
                    e.tenant.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&copied),
        ids(&stored),
        "the same events, in feed order, of the same tenants"
    );
    assert_eq!(
        copied.last().and_then(|e| e.tenant.as_deref()),
        Some("acme")
    );

    // Importing again into a store that holds events is refused.
    let output = Command::new(env!("CARGO_BIN_EXE_factum"))
        .env_remove("DATABASE_URL")
        .args([
            "--database-url",
            postgres.url(),
            "--schema",
            postgres.schema(),
        ])
        .args(["import", "--input", &file_arg])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("already holds events"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_file(&file);
}

/// A consumer's CI: the plain `factum` tool (no catalog registered) checks the consumer's
/// contract against the producer's published catalog directory; a contract the catalog breaks
/// fails with every break named; without `--dir` it says what to give.
#[test]
fn catalog_check_of_a_consumer_contract_against_a_published_catalog() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schemas = root.join("schemas");
    let kept = root.join("examples/shipping/contracts/shipping-service.json");
    let (code, out, err) = run(&[
        "catalog",
        "check",
        "--consumer",
        kept.to_str().unwrap(),
        "--dir",
        schemas.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("consumer `shipping-service`"), "{out}");

    let broken =
        std::env::temp_dir().join(format!("factum-contract-{}.json", factum::Uuid::now_v7()));
    std::fs::write(
        &broken,
        serde_json::json!({
            "consumer": "billing",
            "reads": [
                { "event": "OrderPlaced", "versions": [1],
                  "fields": { "order_id": "string", "total": "integer", "quantity": "string" } },
                { "event": "OrderRefunded", "versions": [1] }
            ]
        })
        .to_string(),
    )
    .unwrap();
    let (code, _, err) = run(&[
        "catalog",
        "check",
        "--consumer",
        broken.to_str().unwrap(),
        "--dir",
        schemas.to_str().unwrap(),
    ]);
    let (no_dir, _, no_dir_err) =
        run(&["catalog", "check", "--consumer", broken.to_str().unwrap()]);
    std::fs::remove_file(&broken).unwrap();
    assert_eq!(code, 1, "{err}");
    for expected in [
        "consumer `billing`: `OrderPlaced` v1, field `total`: `total` is not in the producer's schema (removed or renamed)",
        "consumer `billing`: `OrderPlaced` v1, field `quantity`: the producer's schema has it as integer, the consumer reads it as string",
        "consumer `billing`: `OrderRefunded`: the producer no longer produces this event",
    ] {
        assert!(err.contains(expected), "{expected}\nin:\n{err}");
    }
    assert_ne!(no_dir, 0);
    assert!(no_dir_err.contains("--dir"), "{no_dir_err}");
}

#[factum::event]
#[derive(Debug)]
pub struct CustomerRegistered {
    #[pii(subject)]
    pub customer_id: String,
    #[pii(replacement = "[erased]".to_owned())]
    pub name: String,
}

/// `forget` deletes a data subject's key; with the key-encryption key in the environment the
/// tool shows personal data in plain before and its replacement after (the envelope marked
/// shredded); without it, sealed, never in plain.
#[tokio::test]
async fn forget_shreds_personal_data_as_the_tool_shows_it() {
    use base64::Engine as _;
    let kek = [9; 32];
    let database = TemporaryDatabase::new().await.unwrap();
    let store = (*database)
        .clone()
        .with_key_provider(factum::pii::LocalKeyProvider::new(kek));
    let registered = CustomerRegistered {
        customer_id: "ada".to_owned(),
        name: "Ada Lovelace".to_owned(),
    };
    store
        .append(
            "customer-ada",
            "Customer",
            ExpectedVersion::NoStream,
            vec![NewEvent::of(&registered).unwrap()],
        )
        .await
        .unwrap();
    let url = format!("sqlite://{}", database.path().display());
    let kek = base64::engine::general_purpose::STANDARD.encode(kek);
    let with_key = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_factum"))
            .env("FACTUM_KEY_ENCRYPTION_KEY", &kek)
            .args(["--database-url", &url])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    let shown = with_key(&["--json", "stream", "show", "customer-ada"]);
    assert!(
        shown.contains("Ada Lovelace") && !shown.contains("shredded"),
        "{shown}"
    );
    let (code, sealed, err) = factum(
        &url,
        "factum",
        &["--json", "stream", "show", "customer-ada"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        sealed.contains("$pii") && !sealed.contains("Ada Lovelace"),
        "{sealed}"
    );

    // An export carries personal data sealed, as stored, even with the key at hand.
    let exported = with_key(&["export", "--stream", "customer-ada"]);
    assert!(
        exported.contains("$pii") && !exported.contains("Ada Lovelace"),
        "{exported}"
    );

    let forgot = with_key(&["forget", "ada"]);
    assert!(forgot.contains("forgot data subject \"ada\""), "{forgot}");
    let shown = with_key(&["--json", "stream", "show", "customer-ada"]);
    assert!(!shown.contains("Ada Lovelace"), "{shown}");
    assert!(
        shown.contains("[erased]") && shown.contains("\"shredded\": true"),
        "{shown}"
    );
    let (code, again, _) = factum(&url, "factum", &["--json", "forget", "ada"]);
    assert_eq!(code, 0);
    assert!(again.contains("\"forgotten\": false"), "{again}");
}
