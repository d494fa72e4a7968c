//! The `account_balances` projection, on PostgreSQL and on SQLite, killed with SIGKILL at
//! random points 30 times while catching up over at least 50,000 events, ends equal to a clean
//! rebuild, with nothing counted twice: its checkpoint commits with its writes. (On a fast
//! machine the catch-up may finish before the 30th kill: more history is then appended, and
//! the kills go on.)

use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bank::projections::AccountBalances;
use bank::{AccountEvent, AccountOpened, Channel, MoneyDeposited, MoneyWithdrawn};
use factum::projection::ProjectionRunner;
use factum::testing::postgres::TemporaryStore;
use factum::testing::sqlite::TemporaryDatabase;
use factum::testing::{TestDatabase, execute, fetch_all};
use factum::{CommandContext, EventStore, ExpectedVersion, NewEvent};

const ACCOUNTS: u64 = 500;
const EVENTS_PER_ACCOUNT: u64 = 100;
const KILLS: u32 = 30;
/// The signal `Child::kill` sends on Unix.
const SIGKILL: i32 = 9;

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

/// How the `balances` binary, another process, is pointed at a test's database (a
/// `TestDatabase` names its tables, not its URL).
trait ProjectorDatabase: TestDatabase {
    fn point(&self, command: &mut Command);
}

impl ProjectorDatabase for TemporaryStore {
    fn point(&self, command: &mut Command) {
        command
            .env("DATABASE_URL", self.url())
            .env("FACTUM_SCHEMA", self.schema());
    }
}

impl ProjectorDatabase for TemporaryDatabase {
    fn point(&self, command: &mut Command) {
        command.env(
            "DATABASE_URL",
            format!("sqlite://{}", self.path().display()),
        );
    }
}

async fn history<D: TestDatabase>(database: &D, accounts: std::ops::Range<u64>) {
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
        database
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

async fn read_model<D: TestDatabase>(database: &D) -> Vec<Row> {
    fetch_all(
        &**database,
        &format!(
            "SELECT account, balance, deposited, withdrawn, events FROM {} ORDER BY account",
            database.table("balances")
        ),
    )
    .await
    .unwrap()
}

async fn applied_events<D: TestDatabase>(database: &D) -> i64 {
    read_model(database).await.iter().map(|row| row.4).sum()
}

fn projector<D: ProjectorDatabase>(database: &D, batch_size: u64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_balances"));
    database.point(&mut command);
    command
        .env("BATCH_SIZE", batch_size.to_string())
        .stdout(Stdio::null());
    command
}

async fn a_projection_killed_at_random_points_ends_equal_to_a_clean_rebuild<
    D: ProjectorDatabase,
>() {
    let started = Instant::now();
    let database = D::create().await.unwrap();
    let mut accounts = ACCOUNTS;
    history(&database, 0..accounts).await;
    // The projector creates its table too; here it is read before the first run.
    let balances = database.table("balances");
    execute(&*database, &AccountBalances::new(&balances).create_table())
        .await
        .unwrap();

    let mut random = XorShift(0x2545_F491_4F6C_DD1D);
    let mut kills = 0;
    let mut finished_early = 0;
    // Kills of a run that had applied batches (not of one still starting).
    let mut mid_catch_up = 0;
    while kills < KILLS {
        let applied_before = applied_events(&database).await;
        let mut child = projector(&database, random.between(5, 60))
            .spawn()
            .expect("the projector starts");
        tokio::time::sleep(Duration::from_millis(
            random.between(30, 150 + 18 * u64::from(kills)),
        ))
        .await;
        if let Some(status) = child.try_wait().expect("the projector's status") {
            // Caught up before the kill: more history to catch up on.
            assert!(status.success(), "the projector failed: {status}");
            history(&database, accounts..accounts + 100).await;
            accounts += 100;
            finished_early += 1;
            continue;
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("the killed projector");
        if status.signal() != Some(SIGKILL) {
            // It finished between the check and the kill: no kill, more history.
            assert!(status.success(), "the projector failed: {status}");
            history(&database, accounts..accounts + 100).await;
            accounts += 100;
            finished_early += 1;
            continue;
        }
        kills += 1;
        if applied_events(&database).await > applied_before {
            mid_catch_up += 1;
        }
    }
    let applied_before = applied_events(&database).await;
    eprintln!(
        "{}: {kills} kills ({mid_catch_up} after progress, {finished_early} runs finished first); {applied_before} of {} events applied by then, after {:.1?}",
        D::KIND,
        accounts * EVENTS_PER_ACCOUNT,
        started.elapsed()
    );
    assert_eq!(kills, KILLS, "every kill hit a running projector");
    assert!(mid_catch_up > 0, "some kills hit a catch-up under way");
    let status = projector(&database, 500)
        .status()
        .expect("the projector runs");
    assert!(status.success(), "the last run catches up");

    let crashed = read_model(&database).await;
    assert_eq!(crashed.len() as u64, accounts);
    let applied: i64 = crashed.iter().map(|row| row.4).sum();
    assert_eq!(
        applied as u64,
        accounts * EVENTS_PER_ACCOUNT,
        "every event applied exactly once"
    );

    // A clean rebuild: an empty table and no checkpoint, then one uninterrupted catch-up.
    execute(&*database, &format!("DELETE FROM {balances}"))
        .await
        .unwrap();
    let checkpoints = database.table("projection_checkpoints");
    execute(&*database, &format!("DELETE FROM {checkpoints}"))
        .await
        .unwrap();
    assert!(read_model(&database).await.is_empty());
    let projection = AccountBalances::new(balances);
    let mut runner = ProjectionRunner::new(database.another_client().await.unwrap(), projection);
    assert_eq!(
        runner.catch_up().await.unwrap(),
        accounts * EVENTS_PER_ACCOUNT
    );
    assert_eq!(
        read_model(&database).await,
        crashed,
        "the crashed runs built the same read model"
    );
    eprintln!("{}: done after {:.1?}", D::KIND, started.elapsed());
}

factum::on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_projection_killed_at_random_points_ends_equal_to_a_clean_rebuild,
);
