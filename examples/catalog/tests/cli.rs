//! `factum-examples`, the `factum` tool with the examples' aggregates and catalog registered,
//! on both stores: `stream show` prints the state after each event (forensic replay), `state`
//! rebuilds an aggregate at a version or a time; `catalog check` guards the schema lock.

use std::process::Command;

use factum::testing::postgres::TemporaryStore;
use factum::testing::sqlite::TemporaryDatabase;
use factum::{EventStore, Repository};
use orders::inventory::{AddStock, Inventory, ReserveInventory};
use orders::inventory_stream;

async fn seed(store: &(impl EventStore + Clone + 'static)) -> chrono::DateTime<chrono::Utc> {
    let inventory = Repository::<Inventory, _>::new(store.clone());
    let stream = inventory_stream("book");
    inventory
        .execute(
            &stream,
            AddStock {
                sku: "book".into(),
                quantity: 5,
            },
        )
        .await
        .unwrap();
    let reserve = |order: &str, quantity| ReserveInventory {
        order_id: order.into(),
        sku: "book".into(),
        quantity,
    };
    inventory.execute(&stream, reserve("o-1", 2)).await.unwrap();
    let between = store.read_stream(&stream, ..).await.unwrap()[1].recorded_at;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    inventory.execute(&stream, reserve("o-2", 1)).await.unwrap();
    between
}

fn admin(url: &str, schema: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_factum-examples"))
        .env_remove("DATABASE_URL")
        .args(["--database-url", url, "--schema", schema])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn check(url: &str, schema: &str, between: chrono::DateTime<chrono::Utc>) {
    let (code, out, err) = admin(url, schema, &["stream", "show", "sku-book"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("not registered"), "{out}");
    let states: Vec<&str> = out.lines().filter(|l| l.contains("state after:")).collect();
    assert_eq!(states.len(), 3, "{out}");
    assert!(states[0].contains("\"available\":5"), "{out}");
    assert!(
        states[1].contains("\"available\":3") && states[1].contains("\"o-1\":2"),
        "{out}"
    );
    assert!(
        states[2].contains("\"available\":2") && states[2].contains("\"o-2\":1"),
        "{out}"
    );

    let (_, out, _) = admin(url, schema, &["stream", "show", "sku-book", "--json"]);
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events[2]["state"]["available"], 2);
    assert_eq!(events[2]["event_type"], "InventoryReserved");

    let (code, out, err) = admin(
        url,
        schema,
        &["state", "sku-book", "--at-version", "2", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let state: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(state["version"], 2);
    assert_eq!(state["state"]["available"], 3);

    let at = between.to_rfc3339();
    let (code, out, err) = admin(url, schema, &["state", "sku-book", "--at", &at]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("stream `sku-book` at version 2 (of 3):"),
        "{out}"
    );
    assert!(out.contains("\"available\": 3"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forensic_replay_and_temporal_queries_on_sqlite() {
    let database = TemporaryDatabase::new().await.unwrap();
    let between = seed(&*database).await;
    check(
        &format!("sqlite://{}", database.path().display()),
        "factum",
        between,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forensic_replay_and_temporal_queries_on_postgres() {
    let store = TemporaryStore::new().await.unwrap();
    let between = seed(&(*store).clone()).await;
    check(store.url(), store.schema(), between);
}

fn tool(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_factum-examples"))
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

#[test]
fn catalog_check_passes_on_the_committed_catalog_and_fails_on_a_broken_lock() {
    let (code, out, err) = tool(&["catalog", "check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is up to date"), "{out}");

    // A copy of the catalog whose published OrderPlaced v1 has a field the code no longer has.
    let dir = std::env::temp_dir().join(format!("factum-catalog-{}", factum::Uuid::now_v7()));
    copy_dir(&example_catalog::schemas_dir(), &dir);
    let schema = dir.join("events/OrderPlaced.v1.schema.json");
    let mut published: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&schema).unwrap()).unwrap();
    published["properties"]["coupon"] = serde_json::json!({ "type": "string" });
    published["required"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!("coupon"));
    std::fs::write(&schema, serde_json::to_string_pretty(&published).unwrap()).unwrap();
    let (code, _, err) = tool(&["catalog", "check", "--dir", dir.to_str().unwrap()]);

    // A stale copy: a schema file missing.
    std::fs::remove_file(dir.join("events/OrderShipped.v1.schema.json")).unwrap();
    std::fs::write(
        &schema,
        std::fs::read(example_catalog::schemas_dir().join("events/OrderPlaced.v1.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let (stale_code, _, stale_err) = tool(&["catalog", "check", "--dir", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(code, 1);
    assert!(
        err.contains("published event versions changed incompatibly"),
        "{err}"
    );
    assert!(
        err.contains("OrderPlaced") && err.contains("coupon"),
        "{err}"
    );
    assert_eq!(stale_code, 1);
    assert!(
        stale_err.contains("is stale") && stale_err.contains("OrderShipped.v1.schema.json"),
        "{stale_err}"
    );
    assert!(stale_err.contains("run `cargo build`"), "{stale_err}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The order board's table, unqualified (the search path picks the schema on PostgreSQL).
async fn place_orders(store: &(impl EventStore + Clone + 'static)) {
    let services = orders::Services::new(store);
    for id in ["o-1", "o-2"] {
        services
            .orders
            .execute(
                &orders::order_stream(id),
                orders::order::PlaceOrder {
                    order_id: id.into(),
                    customer: "ada".into(),
                    sku: "book".into(),
                    quantity: 1,
                    amount: 100,
                    card: "visa".into(),
                    address: "1 Main St".into(),
                },
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_the_order_board_on_sqlite() {
    let database = TemporaryDatabase::new().await.unwrap();
    sqlx::raw_sql(orders::board::CREATE_TABLE)
        .execute(database.pool())
        .await
        .unwrap();
    place_orders(&(*database).clone()).await;
    let mut runner =
        factum::projection::ProjectionRunner::new((*database).clone(), orders::board::OrderBoard);
    assert_eq!(runner.catch_up().await.unwrap(), 2);
    // The read model is damaged: a rebuild restores it from the events.
    sqlx::query("UPDATE order_board SET status = 'lost'")
        .execute(database.pool())
        .await
        .unwrap();
    let url = format!("sqlite://{}", database.path().display());
    let (code, out, err) = admin(&url, "factum", &["projections", "rebuild", "order_board"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "rebuilt `order_board`: 2 events handled");
    let rows: Vec<orders::board::Row> = sqlx::query_as(orders::board::SELECT_ALL)
        .fetch_all(database.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.3 == "placed"), "{rows:?}");

    let (code, out, err) = admin(
        &url,
        "factum",
        &["dlq", "retry", "order_board", "order-o-1"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "`order-o-1` drained: 0 events handled, the stream flows again"
    );
    let (code, _, err) = admin(&url, "factum", &["projections", "rebuild", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("projection `nope` is not registered in this tool"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_skip_and_rebuild_the_order_board_on_postgres() {
    let temporary = TemporaryStore::new().await.unwrap();
    let schema = temporary.schema().to_owned();
    let options = temporary
        .url()
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::PgPool::connect_with(options).await.unwrap();
    let store = factum::store::PostgresStore::with_schema(pool, &schema).unwrap();
    place_orders(&store).await;
    let broken = factum::NewEvent::new(
        "OrderPlaced",
        1,
        factum::Payload::encode(&serde_json::json!({ "order_id": 7 })).unwrap(),
    );
    store
        .append(
            "order-bad",
            "Order",
            factum::ExpectedVersion::NoStream,
            vec![broken],
        )
        .await
        .unwrap();
    // No table yet: every stream is parked (the undecodable one at once).
    let mut runner =
        factum::projection::ProjectionRunner::new(store.clone(), orders::board::OrderBoard)
            .retries(0, std::time::Duration::ZERO);
    runner.catch_up().await.unwrap();
    assert_eq!(runner.parked().await.unwrap().len(), 3);

    let url = format!(
        "{}{}options=-c%20search_path%3D{schema}",
        temporary.url(),
        if temporary.url().contains('?') {
            "&"
        } else {
            "?"
        }
    );
    let (code, out, _) = admin(&url, &schema, &["dlq", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("order-bad") && out.contains("does not decode"),
        "{out}"
    );

    // The fix: the table exists. Retry drains the stream in order.
    sqlx::raw_sql(orders::board::CREATE_TABLE)
        .execute(store.pool())
        .await
        .unwrap();
    let (code, out, err) = admin(&url, &schema, &["dlq", "retry", "order_board", "order-o-1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "`order-o-1` drained: 1 events handled, the stream flows again"
    );
    // The undecodable event cannot be fixed: retried, it stops again; skipped, it is kept on record.
    let (code, _, err) = admin(&url, &schema, &["dlq", "retry", "order_board", "order-bad"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("`order-bad` stopped again at version 1"),
        "{err}"
    );
    let (code, out, err) = admin(&url, &schema, &["dlq", "skip", "order_board", "order-bad"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "skipped `order-bad` version 1 (kept on record)");

    // A rebuild starts over: the parked o-2 is applied from the events, the bad event is parked
    // again (a rebuild forgets the queue).
    let (code, out, err) = admin(&url, &schema, &["projections", "rebuild", "order_board"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "rebuilt `order_board`: 2 events handled");
    let rows: Vec<orders::board::Row> = sqlx::query_as(orders::board::SELECT_ALL)
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["o-1", "o-2"]
    );
}

/// The producer's CI: every consumer's committed contract against the code's catalog, with the
/// schema lock.
#[test]
fn catalog_check_holds_the_consumers_contracts() {
    let contracts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shipping/contracts");
    let (code, out, err) = tool(&[
        "catalog",
        "check",
        "--consumer",
        contracts.join("shipping-service.json").to_str().unwrap(),
        "--consumer",
        contracts
            .join("notifications-service.json")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("consumer `shipping-service`")
            && out.contains("consumer `notifications-service`")
            && out.contains("is up to date"),
        "{out}"
    );
}
