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
