//! A PostgreSQL store dumped from one cluster and restored into another: the feed and appends
//! refuse it ([`Error::ClusterChanged`]) instead of letting checkpointed readers skip the events
//! appended on the new cluster, whose transaction ids are smaller; after
//! `PostgresStore::adopt_cluster()` a reader continuing from its old checkpoint sees every new
//! event once, after every old one.

use std::path::Path;
use std::process::Command;

use factum::store::PostgresStore;
use factum::testing::postgres::Cluster;
use factum::{
    Error, EventStore, ExpectedVersion, FeedPosition, FeedQuery, NewEvent, Payload, RecordedEvent,
};

const OLD_EVENTS: u64 = 20;
const NEW_EVENTS: u64 = 15;

fn ping(n: u64) -> NewEvent {
    NewEvent::new(
        "Pinged",
        1,
        Payload::encode(&serde_json::json!({ "n": n })).unwrap(),
    )
}

fn number(event: &RecordedEvent) -> u64 {
    event.event.decode::<serde_json::Value>().unwrap()["n"]
        .as_u64()
        .unwrap()
}

/// Reads the feed from `after` to its current end.
async fn drain(store: &PostgresStore, after: &mut FeedPosition) -> factum::Result<Vec<u64>> {
    let mut all = Vec::new();
    loop {
        let batch = store.read_feed(&FeedQuery::after(*after).limit(7)).await?;
        *after = batch.next;
        if batch.events.is_empty() {
            return Ok(all);
        }
        all.extend(batch.events.iter().map(number));
    }
}

async fn store_on(cluster: &Cluster) -> PostgresStore {
    let pool = sqlx::PgPool::connect(&cluster.url()).await.unwrap();
    PostgresStore::with_schema(pool, "factum").unwrap()
}

async fn system_identifier(store: &PostgresStore) -> u64 {
    let id: i64 = sqlx::query_scalar("SELECT system_identifier FROM pg_control_system()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    id.cast_unsigned()
}

/// Runs a PostgreSQL client program, as the test's user, and checks it succeeded.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(Path::new("/usr/bin").join(program))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Checks that `result` is the refusal naming both clusters.
fn assert_refused<T: std::fmt::Debug>(
    result: factum::Result<T>,
    recorded: u64,
    current: u64,
    what: &str,
) {
    match result {
        Err(Error::ClusterChanged {
            recorded: r,
            current: c,
            ..
        }) if r == Some(recorded) && c == Some(current) => {}
        other => panic!("{what} on the new cluster was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn a_store_restored_into_another_cluster_refuses_until_adopted_then_readers_miss_nothing() {
    let (a, b) = tokio::join!(Cluster::start(), Cluster::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    let store_a = store_on(&a).await;
    store_a.migrate().await.unwrap();

    // Cluster A is older: thousands of transaction ids ahead of B (one per subtransaction
    // that writes).
    sqlx::raw_sql(
        "CREATE TABLE burn (i int);
         DO $$ BEGIN
             FOR i IN 1..5000 LOOP
                 BEGIN INSERT INTO burn VALUES (i); EXCEPTION WHEN others THEN NULL; END;
             END LOOP;
         END $$;",
    )
    .execute(store_a.pool())
    .await
    .unwrap();
    for n in 0..OLD_EVENTS {
        store_a
            .append(
                &format!("s-{}", n % 4),
                "Pinger",
                ExpectedVersion::Any,
                vec![ping(n)],
            )
            .await
            .unwrap();
    }
    let mut checkpoint = FeedPosition::START;
    let old: Vec<u64> = drain(&store_a, &mut checkpoint).await.unwrap();
    assert_eq!(old, (0..OLD_EVENTS).collect::<Vec<_>>());
    // Caught up, the checkpoint stays at the newest event rather than running to the horizon.
    let newest_a = store_a.horizon().await.unwrap().newest_event_tx.unwrap();
    assert_eq!(checkpoint, FeedPosition::end_of_tx(newest_a));

    // Dump the store's schema from A, restore it into B.
    let dump = std::env::temp_dir().join(format!("factum-restore-{}.dump", uuid::Uuid::now_v7()));
    let dump_path = dump.to_str().unwrap();
    let (port_a, port_b) = (a.port().to_string(), b.port().to_string());
    let connect = |port: &str| -> Vec<String> {
        ["-h", "127.0.0.1", "-p", port, "-U", "postgres"]
            .map(str::to_owned)
            .to_vec()
    };
    let mut args = connect(&port_a);
    args.extend(["-n", "factum", "-Fc", "-f", dump_path].map(str::to_owned));
    run(
        "pg_dump",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut args = connect(&port_b);
    args.extend(["-d", "postgres", "--exit-on-error", dump_path].map(str::to_owned));
    run(
        "pg_restore",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    std::fs::remove_file(&dump).unwrap();

    let store_b = store_on(&b).await;
    store_b.migrate().await.unwrap(); // up to date: it changes nothing
    let (id_a, id_b) = (
        system_identifier(&store_a).await,
        system_identifier(&store_b).await,
    );
    assert_ne!(id_a, id_b);

    // Reads and appends are refused, naming both clusters; not transient, so runners stop.
    match store_b
        .append("s-0", "Pinger", ExpectedVersion::Any, vec![ping(1000)])
        .await
    {
        Err(Error::ClusterChanged { .. }) => {}
        other => {
            let missed = drain(&store_b, &mut checkpoint.clone()).await;
            panic!(
                "the append on the new cluster was not refused: {other:?}; the reader at its \
                 checkpoint then reads {missed:?} (the new event is behind it)"
            );
        }
    }
    let refused = drain(&store_b, &mut checkpoint.clone()).await;
    assert!(!refused.as_ref().unwrap_err().is_transient());
    assert_refused(refused, id_a, id_b, "the feed read");
    let version = store_b.stream_version("s-1").await.unwrap();
    assert_refused(
        store_b
            .append(
                "s-1",
                "Pinger",
                ExpectedVersion::Exact(version),
                vec![ping(1001)],
            )
            .await,
        id_a,
        id_b,
        "the append at an exact version",
    );
    let mut transaction = store_b.begin().await.unwrap();
    assert_refused(
        store_b
            .append_in(
                &mut transaction,
                "s-2",
                "Pinger",
                ExpectedVersion::Any,
                vec![ping(1002)],
            )
            .await,
        id_a,
        id_b,
        "the append in a transaction",
    );
    drop(transaction);
    let error = store_b.horizon().await.unwrap_err();
    assert!(
        error.to_string().contains("adopt-cluster"),
        "the message names the way out: {error}"
    );

    // A copy that left the identity behind (say, a replica whose schema was migrated before
    // subscribing) is refused too: it holds events newer than any transaction of B.
    let recorded: i64 = sqlx::query_scalar(
        "UPDATE factum.cluster_identity SET system_identifier = (SELECT system_identifier FROM pg_control_system())
         RETURNING system_identifier",
    )
    .fetch_one(store_b.pool())
    .await
    .unwrap();
    assert_eq!(recorded.cast_unsigned(), id_b);
    assert_refused(
        drain(&store_b, &mut checkpoint.clone()).await,
        id_b,
        id_b,
        "the feed read of a copy without its identity",
    );
    assert_refused(
        store_b
            .append("s-0", "Pinger", ExpectedVersion::Any, vec![ping(1003)])
            .await,
        id_b,
        id_b,
        "the append to a copy without its identity",
    );

    // Adopt B with the tool; once (a second call, through the API, finds the store at home).
    let output = Command::new(env!("CARGO_BIN_EXE_factum"))
        .env_remove("DATABASE_URL")
        .args(["--database-url", &b.url(), "adopt-cluster", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let adoption: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(adoption["adopted"], true, "{adoption}");
    assert_eq!(adoption["previous"], id_b, "{adoption}");
    assert_eq!(adoption["system_identifier"], id_b, "{adoption}");
    let offset = adoption["tx_offset"].as_u64().unwrap();
    assert!(offset > newest_a, "{adoption}");
    let again = store_b.adopt_cluster().await.unwrap();
    assert!(!again.adopted);
    assert_eq!(again.tx_offset, offset);

    // New events on B, by every append path.
    for n in OLD_EVENTS..OLD_EVENTS + NEW_EVENTS {
        let stream = format!("s-{}", n % 4);
        match n % 3 {
            0 => {
                store_b
                    .append(&stream, "Pinger", ExpectedVersion::Any, vec![ping(n)])
                    .await
                    .unwrap();
            }
            1 => {
                let version = store_b.stream_version(&stream).await.unwrap();
                store_b
                    .append(
                        &stream,
                        "Pinger",
                        ExpectedVersion::Exact(version),
                        vec![ping(n)],
                    )
                    .await
                    .unwrap();
            }
            _ => {
                let mut transaction = store_b.begin().await.unwrap();
                store_b
                    .append_in(
                        &mut transaction,
                        &stream,
                        "Pinger",
                        ExpectedVersion::Any,
                        vec![ping(n)],
                    )
                    .await
                    .unwrap();
                transaction.commit().await.unwrap();
            }
        }
    }

    // The reader continuing from its old checkpoint sees exactly the new events, once, in order.
    let mut continued = checkpoint;
    let new = drain(&store_b, &mut continued).await.unwrap();
    assert_eq!(
        new,
        (OLD_EVENTS..OLD_EVENTS + NEW_EVENTS).collect::<Vec<_>>(),
        "the reader at {checkpoint} sees the new events"
    );
    assert_eq!(
        drain(&store_b, &mut continued).await.unwrap(),
        Vec::<u64>::new()
    );
    // A reader from the start sees all of them.
    let all = drain(&store_b, &mut { FeedPosition::START }).await.unwrap();
    assert_eq!(all, (0..OLD_EVENTS + NEW_EVENTS).collect::<Vec<_>>());
    let horizon = store_b.horizon().await.unwrap();
    assert!(
        horizon.horizon_tx > horizon.newest_event_tx.unwrap(),
        "{horizon:?}"
    );
}
