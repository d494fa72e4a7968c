//! Bad input, on PostgreSQL and on SQLite (the limits also on the memory store; the defaults are
//! in the conformance suite, `bad_input_is_refused_before_anything_is_written`): limits set per
//! store are applied by every append path, and rows written around the store by raw SQL (metadata
//! that is no JSON object, a claimed event type that does not decode, an unknown event type)
//! give typed errors to readers and park their stream in projections while the others flow.

use std::time::Duration;

use factum::projection::{ProjectionRunner, RetryOutcome};
use factum::store::{Limits, MemoryStore, SqlStore, StoreKind};
use factum::testing::{TestDatabase, execute, fetch_all};
use factum::{
    DecodeError, Envelope, Error, EventPart, EventStore, ExpectedVersion, NewEvent, Payload, Tx,
};

#[factum::event]
#[derive(Debug)]
pub struct Deposited {
    pub cents: i64,
}

#[factum::event]
#[derive(Debug)]
pub enum AccountEvent {
    Deposited(Deposited),
}

fn deposit(cents: i64) -> NewEvent {
    NewEvent::new(
        "Deposited",
        1,
        Payload::encode(&serde_json::json!({ "cents": cents })).unwrap(),
    )
}

/// Records every deposit it applies in a table: `(stream_id, stream_version)`.
#[derive(Debug)]
struct Applied {
    table: String,
}

#[factum::projection(name = "applied")]
impl Applied {
    #[handle]
    async fn deposited(
        &mut self,
        _: &Deposited,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (stream_id, stream_version) VALUES ($1, $2)",
            self.table
        )))
        .bind(envelope.stream_id.clone())
        .bind(i64::try_from(envelope.stream_version).unwrap())
        .execute(tx)
        .await?;
        Ok(())
    }
}

/// Appends through `store` (which refuses payloads above 100 bytes and metadata above 50):
/// every append path refuses what is too large, typed, and stores nothing of it.
async fn small_limits_are_applied<S: SqlStore>(store: &S) {
    assert_eq!(
        (
            Limits::default().max_payload_bytes,
            Limits::default().max_metadata_bytes
        ),
        (1024 * 1024, 1024 * 1024)
    );
    let large = NewEvent::new(
        "Uploaded",
        1,
        Payload::encode(&serde_json::json!({ "blob": "x".repeat(200) })).unwrap(),
    );
    let result = store
        .append(
            "limited",
            "Probe",
            ExpectedVersion::Any,
            vec![deposit(1), large.clone()],
        )
        .await;
    assert!(
        matches!(
            &result,
            Err(Error::EventTooLarge { part: EventPart::Payload, bytes: 211, limit: 100, event_type, .. })
                if event_type == "Uploaded"
        ),
        "{result:?}"
    );
    let mut transaction = store.begin().await.unwrap();
    let result = store
        .append_in(
            &mut transaction,
            "limited",
            "Probe",
            ExpectedVersion::Any,
            vec![deposit(2).metadata("note", "n".repeat(60))],
        )
        .await;
    assert!(
        matches!(
            &result,
            Err(Error::EventTooLarge {
                part: EventPart::Metadata,
                limit: 50,
                ..
            })
        ),
        "{result:?}"
    );
    let result = store
        .append_in(
            &mut transaction,
            "",
            "Probe",
            ExpectedVersion::Any,
            vec![deposit(3)],
        )
        .await;
    assert!(
        matches!(&result, Err(Error::InvalidStreamId { .. })),
        "{result:?}"
    );
    transaction.commit().await.unwrap();
    store
        .append(
            "limited",
            "Probe",
            ExpectedVersion::NoStream,
            vec![deposit(4).metadata("note", "short")],
        )
        .await
        .unwrap();
    let stored = store.read_stream("limited", ..).await.unwrap();
    assert_eq!(
        stored.len(),
        1,
        "only the append within the limits is stored"
    );
}

fn small() -> Limits {
    Limits::default()
        .max_payload_bytes(100)
        .max_metadata_bytes(50)
}

#[tokio::test]
async fn limits_are_set_per_store_on_postgres() {
    let database = factum::testing::postgres::TemporaryStore::new()
        .await
        .unwrap();
    let store = database
        .another_client()
        .await
        .unwrap()
        .with_limits(small());
    assert_eq!(store.limits(), &small());
    small_limits_are_applied(&store).await;
}

#[tokio::test]
async fn limits_are_set_per_store_on_sqlite() {
    let database = factum::testing::sqlite::TemporaryDatabase::new()
        .await
        .unwrap();
    let store = database
        .another_client()
        .await
        .unwrap()
        .with_limits(small());
    small_limits_are_applied(&store).await;
}

#[tokio::test]
async fn limits_are_set_per_store_in_memory() {
    let store = MemoryStore::new().with_limits(small());
    let result = store
        .append(
            "limited",
            "Probe",
            ExpectedVersion::Any,
            vec![deposit(1).metadata("note", "n".repeat(60))],
        )
        .await;
    assert!(
        matches!(
            &result,
            Err(Error::EventTooLarge {
                part: EventPart::Metadata,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(store.stream_version("limited").await.unwrap(), 0);
}

/// Inserts a copy of `stream`'s first event as version `version`, with `event_type`,
/// `schema_version` and `metadata` as given: a row written around the store, by raw SQL.
async fn insert_raw<D: TestDatabase>(
    database: &D,
    source: &str,
    stream: &str,
    version: i64,
    event_type: &str,
    schema_version: i64,
    metadata: &str,
) {
    let events = database.table("events");
    let id = factum::Uuid::now_v7();
    let id = match D::KIND {
        StoreKind::Postgres => format!("CAST('{id}' AS uuid)"),
        _ => format!("'{id}'"),
    };
    let metadata = match D::KIND {
        StoreKind::Postgres => format!("CAST('{metadata}' AS json)"),
        _ => format!("'{metadata}'"),
    };
    execute(
        &**database,
        &format!(
            "INSERT INTO {events} (stream_id, stream_version, aggregate_type, event_id,
                 event_type, schema_version, payload, metadata, correlation_id, causation_id,
                 actor, recorded_at)
             SELECT '{stream}', {version}, aggregate_type, {id}, '{event_type}',
                    {schema_version}, payload, {metadata}, correlation_id, causation_id, actor,
                    recorded_at
             FROM {events} WHERE stream_id = '{source}' AND stream_version = 1"
        ),
    )
    .await
    .unwrap();
}

async fn a_stored_row_that_does_not_read_parks_its_stream_while_the_others_flow<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let table = database.table("applied");
    execute(
        &*database,
        &format!("CREATE TABLE {table} (stream_id TEXT NOT NULL, stream_version BIGINT NOT NULL)"),
    )
    .await
    .unwrap();
    let append = async |stream: &str, cents| {
        database
            .append(
                stream,
                "Account",
                ExpectedVersion::Any,
                vec![deposit(cents)],
            )
            .await
            .unwrap();
    };
    append("acc-1", 1).await;
    append("acc-bad", 1).await;
    // Metadata that is no JSON object, as version 2 of acc-bad.
    insert_raw(&database, "acc-bad", "acc-bad", 2, "Deposited", 1, "[1, 2]").await;
    // A type no projection here knows, and a known type at a schema version none knows.
    insert_raw(&database, "acc-1", "acc-odd", 1, "Mystery", 1, "{}").await;
    insert_raw(&database, "acc-1", "acc-old", 1, "Deposited", 7, "{}").await;
    append("acc-bad", 3).await;
    append("acc-1", 2).await;

    let mut runner = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        Applied {
            table: table.clone(),
        },
    )
    .retries(1, Duration::from_millis(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut handled = 0;
    while handled < 3 && std::time::Instant::now() < deadline {
        handled += runner.catch_up().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(handled, 3, "acc-1's two deposits and acc-bad's first");
    let applied: Vec<(String, i64)> = fetch_all(
        &*database,
        &format!(
            "SELECT stream_id, stream_version FROM {table} ORDER BY stream_id, stream_version"
        ),
    )
    .await
    .unwrap();
    let applied: Vec<(&str, i64)> = applied.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    assert_eq!(applied, [("acc-1", 1), ("acc-1", 2), ("acc-bad", 1)]);

    let parked = runner.parked().await.unwrap();
    let streams: Vec<(&str, u64, u64)> = parked
        .iter()
        .map(|p| (p.stream_id.as_str(), p.first_version, p.events))
        .collect();
    assert_eq!(
        streams,
        [("acc-bad", 2, 2), ("acc-old", 1, 1)],
        "{parked:?}"
    );
    let error = parked[0].error.as_deref().unwrap();
    assert!(
        error.contains("acc-bad@2") && error.contains("column `metadata`"),
        "{error}"
    );
    assert_eq!(parked[0].attempts, 1, "a decoding failure is not retried");
    let error = parked[1].error.as_deref().unwrap();
    assert!(error.contains("schema version 7"), "{error}");

    // Other readers get a typed error naming the stream, version and column.
    for result in [
        database
            .read_feed(&factum::FeedQuery::from_start())
            .await
            .map(|_| ()),
        database.read_stream("acc-bad", ..).await.map(|_| ()),
    ] {
        match result {
            Err(Error::Decode {
                stream_id,
                stream_version: 2,
                cause: DecodeError::Column { column, .. },
            }) => assert_eq!((stream_id.as_str(), column), ("acc-bad", "metadata")),
            other => panic!("expected a decoding error, got {other:?}"),
        }
    }
    // The unknown type is passed by the projection (it does not subscribe to it); decoding it
    // names it.
    let odd = database.read_stream("acc-odd", ..).await.unwrap();
    match odd[0].decode_events::<AccountEvent>() {
        Err(Error::Decode {
            cause: DecodeError::UnknownType { event_type, .. },
            ..
        }) => assert_eq!(event_type, "Mystery"),
        other => panic!("expected an unknown type, got {other:?}"),
    }

    // Skipped for the record, the stream flows again.
    assert_eq!(runner.skip_parked("acc-bad").await.unwrap(), Some(2));
    assert!(matches!(
        runner.retry_parked("acc-bad").await.unwrap(),
        RetryOutcome::Drained { handled: 1 }
    ));
}

factum::on_both_stores!(
    #[tokio::test]
    a_stored_row_that_does_not_read_parks_its_stream_while_the_others_flow,
);
