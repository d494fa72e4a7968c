use bank::{AccountEvent, BankAccount, MoneyDeposited};
use factum::store::PostgresStore;
use factum::{CommandContext, EventStore, ExpectedVersion, NewEvent, Repository};
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await?;
    sqlx::query("DROP SCHEMA IF EXISTS scratch CASCADE")
        .execute(&pool)
        .await?;
    let store = PostgresStore::with_schema(pool.clone(), "scratch")?;
    store.migrate().await?;
    let ctx = CommandContext::new();
    let mut batch = vec![NewEvent::from_event(
        &AccountEvent::from(bank::AccountOpened {
            owner: "x".into(),
            initial_deposit: 0,
        }),
        &ctx,
    )?];
    for v in 2..=10_000u64 {
        batch.push(NewEvent::from_event(
            &AccountEvent::from(MoneyDeposited {
                amount: 1,
                balance_after: v - 1,
            }),
            &ctx,
        )?);
        if batch.len() == 1000 || v == 10_000 {
            store
                .append(
                    "long",
                    "BankAccount",
                    ExpectedVersion::Any,
                    std::mem::take(&mut batch),
                )
                .await?;
        }
    }
    let repo = Repository::<BankAccount, _>::new(store.clone());
    for _ in 0..8 {
        let t = Instant::now();
        let mut n = 0;
        store
            .replay_history("long", false, |_| {
                n += 1;
                Ok(())
            })
            .await?;
        let t1 = t.elapsed();
        let l = repo.load("long").await?;
        let t2 = t.elapsed();
        let t3 = Instant::now();
        let _one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await?;
        let rt = t3.elapsed();
        let t4 = Instant::now();
        let row: (Vec<i64>, Vec<String>, Vec<i32>, Vec<String>) = sqlx::query_as("SELECT array_agg(stream_version), array_agg(event_type), array_agg(schema_version), array_agg(payload::text) FROM (SELECT * FROM scratch.events e WHERE e.stream_id = $1 ORDER BY e.stream_version) e").bind("long").fetch_one(&pool).await?;
        let t5 = t4.elapsed();
        let t6 = Instant::now();
        let rows = sqlx::query("SELECT e.stream_version, e.aggregate_type, e.event_type, e.schema_version, e.payload::text FROM scratch.events e WHERE e.stream_id = $1 ORDER BY e.stream_version").bind("long").fetch_all(&pool).await?;
        use sqlx::Row;
        let mut k = 0usize;
        for r in &rows {
            let v: i64 = r.try_get_unchecked(0)?;
            let a: &str = r.try_get_unchecked(1)?;
            let e: &str = r.try_get_unchecked(2)?;
            let p: &str = r.try_get_unchecked(4)?;
            k += v as usize + a.len() + e.len() + p.len();
        }
        let t7 = t6.elapsed();
        println!(
            "replay {:?} ({n}) load {:?} (v{}) rt {:?} | arrays {:?} ({}) | unchecked rows {:?} {k}",
            t1,
            t2 - t1,
            l.version,
            rt,
            t5,
            row.0.len(),
            t7
        );
    }
    sqlx::query("DROP SCHEMA IF EXISTS scratch CASCADE")
        .execute(&pool)
        .await?;
    Ok(())
}
