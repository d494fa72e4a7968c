//! A hot aggregate (seed 003: "100,000 users hit Buy on the same aggregate"): many clients
//! deposit into ONE bank account on PostgreSQL, in the same run,
//!
//! - (a) through the optimistic retry loop (a repository with the hot cache: each conflict
//!   reloads and decides again), counting the conflicts;
//! - (b) through `Repository::serialize_streams` (one writer per stream in process, the events
//!   of queued commands appended together), where no conflict may surface (the run fails
//!   otherwise).
//!
//! Alternating which goes first in each run, each on a fresh account.

use std::num::NonZeroUsize;
use std::time::Instant;

use bank::{BankAccount, Deposit, OpenAccount};
use factum::testing::postgres::TemporaryStore;
use factum::{CommandContext, Repository};
use serde::Serialize;

use crate::stats::median;

pub struct Config {
    pub runs: usize,
    pub clients: usize,
    pub commands: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    pub clients: usize,
    pub commands_per_run: usize,
    /// The optimistic retry loop, commands per second (median) and every run.
    pub retry_loop_per_second: f64,
    pub retry_loop_runs: Vec<f64>,
    /// Conflicts the retry loop met (retried inside), over all runs.
    pub retry_loop_conflicts: u64,
    /// Serialized, commands per second (median) and every run.
    pub serialized_per_second: f64,
    pub serialized_runs: Vec<f64>,
    /// Conflicts that reached a command's attempts while serialized (must be 0).
    pub serialized_conflicts: u64,
    /// serialized / retry loop, the median of per-run ratios.
    pub ratio: f64,
}

pub async fn run(config: &Config) -> Result<Report, Box<dyn std::error::Error>> {
    let store = TemporaryStore::with_pool_size(32).await?;
    let (mut loop_runs, mut serial_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut loop_conflicts, mut serial_conflicts) = (0, 0);
    for run in 0..config.runs {
        let (mut looped, mut serial) = (0.0, 0.0);
        for variant in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            let repository = Repository::<BankAccount, _>::new((*store).clone())
                .cache(NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN))
                .max_retries(u32::MAX);
            let repository = if variant == 1 {
                repository.serialize_streams(
                    NonZeroUsize::new(config.clients * 2).unwrap_or(NonZeroUsize::MIN),
                )
            } else {
                repository
            };
            let account = format!("hot-{run}-{variant}");
            repository
                .execute(
                    &account,
                    OpenAccount {
                        owner: "Hot".into(),
                        initial_deposit: 0,
                    },
                )
                .await?;
            let (rate, conflicts) = hammer(&repository, &account, config).await?;
            if variant == 0 {
                looped = rate;
                loop_conflicts += conflicts;
            } else {
                serial = rate;
                serial_conflicts += conflicts;
            }
        }
        eprintln!(
            "run {}: retry loop {looped:.0} commands/s, serialized {serial:.0} commands/s",
            run + 1
        );
        loop_runs.push(looped);
        serial_runs.push(serial);
        ratios.push(serial / looped);
    }
    Ok(Report {
        runs: config.runs,
        clients: config.clients,
        commands_per_run: config.commands,
        retry_loop_per_second: median(&loop_runs),
        retry_loop_runs: loop_runs,
        retry_loop_conflicts: loop_conflicts,
        serialized_per_second: median(&serial_runs),
        serialized_runs: serial_runs,
        serialized_conflicts: serial_conflicts,
        ratio: median(&ratios),
    })
}

/// `config.commands` deposits from `config.clients` clients: commands per second, and the
/// conflicts their attempts met.
async fn hammer(
    repository: &Repository<BankAccount, factum::store::PostgresStore>,
    account: &str,
    config: &Config,
) -> Result<(f64, u64), Box<dyn std::error::Error>> {
    let per_client = config.commands / config.clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..config.clients {
        let repository = repository.clone();
        let account = account.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0_u64;
            for _ in 0..per_client {
                let execution = repository
                    .execute_detailed(&account, Deposit { amount: 1 }, &CommandContext::new())
                    .await
                    .map_err(|e| e.to_string())?;
                conflicts += u64::from(execution.attempts - 1);
            }
            Ok::<_, String>(conflicts)
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await??;
    }
    let rate = (per_client * config.clients) as f64 / started.elapsed().as_secs_f64();
    Ok((rate, conflicts))
}
