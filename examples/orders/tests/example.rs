//! The README's first command: the main example runs end to end on SQLite, with no server and
//! no `DATABASE_URL`, and says where its data and the catalog are.

use std::process::Command;

#[test]
fn the_example_runs_on_sqlite_without_a_server() {
    let dir = std::env::temp_dir().join(format!("factum-example-{}", factum::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_orders"))
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let database = dir.join("target").join("factum-orders-example.db");
    let exists = database.exists();
    std::fs::remove_dir_all(&dir).unwrap();

    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(exists, "the SQLite file is written");
    for line in [
        "on the SQLite file target/factum-orders-example.db",
        "order o-1 (completes): Completed",
        "order o-2 (out of stock): Cancelled",
        "order o-5 (payment never confirmed): Cancelled — the payment did not answer in time",
        "    payment-o-4    PaymentRefunded",
        "the `order_board` read model (projection):",
        "o-1   ada     1999 completed",
        "the event catalog (JSON Schema, AsyncAPI, flow diagram) is in",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[tokio::test]
async fn the_example_runs_on_postgres_when_database_url_names_one() {
    let url = factum::testing::postgres::database_url();
    let schema = format!("example_{}", factum::Uuid::now_v7().simple());
    let output = Command::new(env!("CARGO_BIN_EXE_orders"))
        .env("DATABASE_URL", &url)
        .env("FACTUM_SCHEMA", &schema)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("on the schema `{schema}` of")),
        "{stdout}"
    );
    assert!(
        stdout.contains("o-4   ada     1999 cancelled  shipment failed"),
        "{stdout}"
    );
}
