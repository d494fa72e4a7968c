//! The `account_balances` projection, killed with SIGKILL at random points 30 times
//! while catching up over at least 50,000 events, ends equal to a clean rebuild, with nothing
//! counted twice: its checkpoint commits with its writes. (On a fast machine the catch-up may
//! finish before the 30th kill: more history is then appended, and the kills go on.)

use std::process::{Command, Stdio};
use std::time::Duration;

use bank::projections::AccountBalances;
use bank::{AccountEvent, AccountOpened, Channel, MoneyDeposited, MoneyWithdrawn};
use factum::projection::ProjectionRunner;
use factum::testing::postgres::TemporaryStore;
use factum::{CommandContext, EventStore, ExpectedVersion, NewEvent};

const ACCOUNTS: u64 = 500;
const EVENTS_PER_ACCOUNT: u64 = 100;
const KILLS: u32 = 30;

/// A small deterministic generator (no dependency needed).
struct XorShift(u64);

impl XorShift {
    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}

async fn history(store: &TemporaryStore, accounts: std::ops::Range<u64>) {
    let context = CommandContext::new();
    for account in accounts {
        let mut balance = 1_000;
        let mut events = vec![AccountEvent::from(AccountOpened {
            owner: format!("owner {account}"),
            initial_deposit: balance,
        })];
        for i in 1..EVENTS_PER_ACCOUNT {
            let amount = 1 + (account * 7 + i * 13) % 50;
            if i % 3 == 0 {
                balance -= amount;
                events.push(AccountEvent::from(MoneyWithdrawn {
                    amount,
                    balance_after: balance,
                    channel: Channel::Atm,
                }));
            } else {
                balance += amount;
                events.push(AccountEvent::from(MoneyDeposited {
                    amount,
                    balance_after: balance,
                }));
            }
        }
        let new: Vec<NewEvent> = events
            .iter()
            .map(|event| NewEvent::from_event(event, &context).unwrap())
            .collect();
        store
            .append(
                &format!("acc-{account}"),
                "BankAccount",
                ExpectedVersion::NoStream,
                new,
            )
            .await
            .unwrap();
    }
}

type Row = (String, i64, i64, i64, i64);

async fn read_model(store: &TemporaryStore) -> Vec<Row> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT account, balance, deposited, withdrawn, events FROM \"{}\".balances ORDER BY account",
        store.schema()
    )))
    .fetch_all(store.pool())
    .await
    .unwrap()
}

fn projector(store: &TemporaryStore, batch_size: u64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_balances"));
    command
        .env("DATABASE_URL", store.url())
        .env("FACTUM_SCHEMA", store.schema())
        .env("BATCH_SIZE", batch_size.to_string())
        .stdout(Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_killed_at_random_points_ends_equal_to_a_clean_rebuild() {
    let store = TemporaryStore::new().await.unwrap();
    let mut accounts = ACCOUNTS;
    history(&store, 0..accounts).await;

    let mut random = XorShift(0x2545_F491_4F6C_DD1D);
    let mut kills = 0;
    while kills < KILLS {
        let mut child = projector(&store, random.between(5, 60))
            .spawn()
            .expect("the projector starts");
        tokio::time::sleep(Duration::from_millis(
            random.between(30, 150 + 18 * u64::from(kills)),
        ))
        .await;
        if child.try_wait().expect("the projector's status").is_some() {
            // Caught up before the kill: more history to catch up on.
            history(&store, accounts..accounts + 100).await;
            accounts += 100;
            continue;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("the killed projector");
        kills += 1;
    }
    let applied_before: i64 = read_model(&store).await.iter().map(|row| row.4).sum();
    eprintln!(
        "{kills} kills; {applied_before} of {} events applied by then",
        accounts * EVENTS_PER_ACCOUNT
    );
    let status = projector(&store, 500).status().expect("the projector runs");
    assert!(status.success(), "the last run catches up");

    let crashed = read_model(&store).await;
    assert_eq!(crashed.len() as u64, accounts);
    let applied: i64 = crashed.iter().map(|row| row.4).sum();
    assert_eq!(
        applied as u64,
        accounts * EVENTS_PER_ACCOUNT,
        "every event applied exactly once"
    );

    // A clean rebuild: an empty table and no checkpoint, then one uninterrupted catch-up.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "TRUNCATE \"{0}\".balances; DELETE FROM \"{0}\".projection_checkpoints",
        store.schema()
    )))
    .execute(store.pool())
    .await
    .unwrap();
    let projection = AccountBalances::new(format!("\"{}\".balances", store.schema()));
    let mut runner = ProjectionRunner::new(store.another_client().await.unwrap(), projection);
    assert_eq!(
        runner.catch_up().await.unwrap(),
        accounts * EVENTS_PER_ACCOUNT
    );
    assert_eq!(
        read_model(&store).await,
        crashed,
        "the crashed runs built the same read model"
    );
}
