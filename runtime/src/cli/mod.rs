//! The `factum` command-line tool: look inside a store (PostgreSQL or SQLite, by its URL)
//! without writing SQL. Human-readable tables by default, `--json` for scripts.
//!
//! The `factum` binary (feature `cli`) knows no domain types: it shows events and envelopes.
//! An application builds its own tool with its aggregates registered, and gets the state after
//! each event (`stream show`) and temporal queries (`state`):
//!
//! ```rust,ignore
//! // src/bin/orders-admin.rs
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     factum::cli::Cli::new().aggregate::<Order>().aggregate::<Payment>().run().await
//! }
//! ```

mod args;
mod error;
mod output;
mod projections;
mod store;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use serde::Serialize;

use self::args::{
    Args, CatalogCommand, Command, DlqCommand, FeedCommand, ProjectionsCommand, StreamCommand,
};
pub use self::error::CliError;
use self::output::{Table, envelope, print_json};
use self::store::AnyStore;
use crate::aggregate::Aggregate;
use crate::error::Error;
use crate::store::{FeedQuery, StreamEvent};

/// Replays a stream of one aggregate type, giving the state after each event as JSON.
type Replayer = fn(&str, &[StreamEvent]) -> Result<Vec<serde_json::Value>, Error>;

fn replay<A: Aggregate + Serialize>(
    stream_id: &str,
    events: &[StreamEvent],
) -> Result<Vec<serde_json::Value>, Error> {
    let mut state = A::default();
    let mut states = Vec::with_capacity(events.len());
    for event in events {
        for decoded in event.decode::<A::Event>(stream_id)? {
            state.apply(&decoded);
        }
        states.push(serde_json::to_value(&state).map_err(|cause| Error::Encode {
            event_type: "aggregate state",
            cause,
        })?);
    }
    Ok(states)
}

/// The tool, with the aggregates it knows.
#[derive(Clone, Default)]
pub struct Cli {
    aggregates: BTreeMap<&'static str, Replayer>,
    catalog: Option<(crate::catalog::Catalog, std::path::PathBuf)>,
    projections: BTreeMap<&'static str, Vec<std::sync::Arc<dyn projections::Registered>>>,
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("aggregates", &self.aggregates.keys().collect::<Vec<_>>())
            .field("projections", &self.projections.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Cli {
    /// A tool knowing no domain types.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an aggregate: `stream show` prints the state after each of its events, and
    /// `state` rebuilds it at a version or a time.
    #[must_use]
    pub fn aggregate<A: Aggregate + Serialize>(mut self) -> Self {
        self.aggregates.insert(A::TYPE, replay::<A>);
        self
    }

    /// Registers a projection written for PostgreSQL (its handlers take a `PgConnection`), for
    /// `projections rebuild` (`reset` clears its read model, e.g. `TRUNCATE balances`) and
    /// `dlq retry|skip`.
    #[must_use]
    pub fn projection<P>(
        self,
        new: impl Fn() -> P + Send + Sync + 'static,
        reset: &'static str,
    ) -> Self
    where
        P: crate::projection::Projection<Connection = sqlx::PgConnection> + Sync,
    {
        self.register(
            P::NAME,
            projections::Registration::<crate::projection::ProjectionRunner<P>, _> {
                new,
                reset,
                runner: std::marker::PhantomData,
            },
        )
    }

    /// Registers a projection written for SQLite (its handlers take a `SqliteConnection`).
    #[must_use]
    pub fn sqlite_projection<P>(
        self,
        new: impl Fn() -> P + Send + Sync + 'static,
        reset: &'static str,
    ) -> Self
    where
        P: crate::projection::Projection<Connection = sqlx::SqliteConnection> + Sync,
    {
        self.register(
            P::NAME,
            projections::Registration::<crate::projection::SqliteProjectionRunner<P>, _> {
                new,
                reset,
                runner: std::marker::PhantomData,
            },
        )
    }

    fn register(
        mut self,
        name: &'static str,
        entry: impl projections::Registered + 'static,
    ) -> Self {
        self.projections
            .entry(name)
            .or_default()
            .push(std::sync::Arc::new(entry));
        self
    }

    /// The registered projection `name` for this store.
    fn registered(
        &self,
        store: &AnyStore,
        name: &str,
    ) -> Result<&std::sync::Arc<dyn projections::Registered>, CliError> {
        self.projections
            .get(name)
            .and_then(|entries| entries.iter().find(|e| e.runs_on(store)))
            .ok_or_else(|| CliError::UnregisteredProjection {
                name: name.to_owned(),
                store: store.describe(),
            })
    }

    /// Registers the application's event catalog and the directory it is written to, for
    /// `catalog check`.
    #[must_use]
    pub fn catalog(
        mut self,
        catalog: crate::catalog::Catalog,
        dir: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.catalog = Some((catalog, dir.into()));
        self
    }

    /// Runs the command of the process's arguments; prints the output, or one line saying what
    /// went wrong (exit code 1; 2 for a malformed command line).
    pub async fn run(&self) -> ExitCode {
        self.run_with(std::env::args_os()).await
    }

    /// Runs the command of `args` (the first is the program name).
    pub async fn run_with<I, T>(&self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = match Args::try_parse_from(args) {
            Ok(args) => args,
            Err(error) => {
                let _ = error.print();
                return if error.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
        };
        match self.execute(&args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        }
    }

    async fn execute(&self, args: &Args) -> Result<(), CliError> {
        if let Command::Catalog {
            command: CatalogCommand::Check { dir },
        } = &args.command
        {
            return self.catalog_check(dir.as_deref(), args.json);
        }
        let url = args.database_url.as_deref().ok_or(CliError::NoUrl)?;
        let store = AnyStore::open(url, &args.schema).await?;
        match &args.command {
            Command::Stream {
                command: StreamCommand::Show { id },
            } => self.stream_show(&store, id, args.json).await,
            Command::State { id, at_version, at } => {
                self.state(&store, id, *at_version, *at, args.json).await
            }
            Command::Feed {
                command:
                    FeedCommand::Tail {
                        from,
                        limit,
                        no_follow,
                    },
            } => feed_tail(&store, *from, *limit, !no_follow, args.json).await,
            Command::Projections {
                command: ProjectionsCommand::Status { name },
            } => projections_status(&store, name.as_deref(), args.json).await,
            Command::Projections {
                command: ProjectionsCommand::Rebuild { name },
            } => {
                let handled = self.registered(&store, name)?.rebuild(&store).await?;
                if args.json {
                    print_json(&serde_json::json!({ "projection": name, "handled": handled }));
                } else {
                    println!("rebuilt `{name}`: {handled} events handled");
                }
                Ok(())
            }
            Command::Dlq {
                command: DlqCommand::List,
            } => dlq_list(&store, args.json).await,
            Command::Dlq {
                command: DlqCommand::Retry { projection, stream },
            } => {
                let outcome = self
                    .registered(&store, projection)?
                    .retry(&store, stream)
                    .await?;
                match outcome {
                    crate::projection::RetryOutcome::Drained { handled } => {
                        if args.json {
                            print_json(&serde_json::json!({
                                "stream_id": stream, "outcome": "drained", "handled": handled
                            }));
                        } else {
                            println!(
                                "`{stream}` drained: {handled} events handled, the stream flows again"
                            );
                        }
                        Ok(())
                    }
                    crate::projection::RetryOutcome::Stopped {
                        handled,
                        stream_version,
                        error,
                        ..
                    } => Err(CliError::StoppedAgain {
                        stream: stream.clone(),
                        stream_version,
                        handled,
                        error: error.to_string(),
                    }),
                }
            }
            Command::Dlq {
                command: DlqCommand::Skip { projection, stream },
            } => {
                let skipped = self
                    .registered(&store, projection)?
                    .skip(&store, stream)
                    .await?;
                if args.json {
                    print_json(
                        &serde_json::json!({ "stream_id": stream, "skipped_version": skipped }),
                    );
                    return Ok(());
                }
                match skipped {
                    Some(version) => {
                        println!("skipped `{stream}` version {version} (kept on record)");
                    }
                    None => println!("`{stream}` is not parked"),
                }
                Ok(())
            }
            Command::Stats { largest } => stats(&store, *largest, args.json).await,
            Command::Catalog { .. } => Ok(()),
        }
    }

    fn catalog_check(&self, dir: Option<&std::path::Path>, json: bool) -> Result<(), CliError> {
        use crate::catalog::{CatalogError, Severity};
        let (catalog, registered) = self.catalog.as_ref().ok_or_else(|| {
            CliError::Usage(
                "no catalog is registered in this tool: build your own with factum::cli::Cli::new().catalog(catalog, \"schemas\")".to_owned(),
            )
        })?;
        let dir = dir.unwrap_or(registered);
        let changes = match catalog.check(dir) {
            Ok(changes) => changes,
            Err(CatalogError::Breaking(breaking)) => {
                return Err(CliError::Catalog(format!(
                    "published event versions changed incompatibly:\n{breaking}"
                )));
            }
            Err(error) => return Err(CliError::Catalog(error.to_string())),
        };
        let stale: Vec<String> = catalog
            .files()
            .into_iter()
            .filter(|(path, text)| {
                std::fs::read_to_string(dir.join(path)).ok().as_deref() != Some(text.as_str())
            })
            .map(|(path, _)| path.display().to_string())
            .collect();
        let unpublished: Vec<String> = changes
            .iter()
            .filter(|c| c.severity != Severity::Breaking)
            .map(|c| format!("{} v{}: {}", c.event, c.version, c.what))
            .collect();
        if json {
            print_json(&serde_json::json!({
                "dir": dir.display().to_string(),
                "events": catalog.events().count(),
                "stale_files": stale,
                "unpublished_changes": unpublished,
            }));
        }
        if stale.is_empty() {
            if !json {
                println!(
                    "the catalog in {} is up to date: {} event versions, no incompatible change",
                    dir.display(),
                    catalog.events().count()
                );
            }
            Ok(())
        } else {
            Err(CliError::Catalog(format!(
                "the catalog in {} is stale ({}{}): run `cargo build` and commit it",
                dir.display(),
                stale.join(", "),
                if unpublished.is_empty() {
                    String::new()
                } else {
                    format!("; not yet published: {}", unpublished.join("; "))
                }
            )))
        }
    }

    async fn stream_show(&self, store: &AnyStore, id: &str, json: bool) -> Result<(), CliError> {
        let events = store.read_stream(id, ..).await?;
        if events.is_empty() {
            return Err(CliError::UnknownStream(id.to_owned()));
        }
        let aggregate_type = events[0].aggregate_type.clone();
        let states = match self.aggregates.get(aggregate_type.as_str()) {
            Some(replay) => {
                let stream_events: Vec<StreamEvent> =
                    events.iter().cloned().map(StreamEvent::from).collect();
                Some(replay(id, &stream_events)?)
            }
            None => None,
        };
        if json {
            let rows: Vec<serde_json::Value> = events
                .iter()
                .enumerate()
                .map(|(i, event)| {
                    let mut row =
                        serde_json::to_value(envelope(event)).unwrap_or(serde_json::Value::Null);
                    if let Some(states) = &states {
                        row["state"] = states[i].clone();
                    }
                    row
                })
                .collect();
            print_json(&rows);
            return Ok(());
        }
        println!(
            "stream `{id}` ({aggregate_type}): {} events{}",
            events.len(),
            if states.is_none() {
                " (state not shown: the aggregate type is not registered in this tool)"
            } else {
                ""
            }
        );
        let mut table = Table::new(&[
            "VERSION",
            "POSITION",
            "TYPE",
            "SCHEMA",
            "RECORDED AT",
            "EVENT ID",
            "CORRELATION",
            "CAUSATION",
            "ACTOR",
        ]);
        for event in &events {
            table.row(vec![
                event.stream_version.to_string(),
                event.global_position.to_string(),
                event.event_type.clone(),
                format!("v{}", event.schema_version),
                event
                    .recorded_at
                    .format("%Y-%m-%d %H:%M:%S%.3f")
                    .to_string(),
                event.event_id.to_string(),
                event.correlation_id.to_string(),
                event.causation_id.to_string(),
                event.actor.clone().unwrap_or_default(),
            ]);
        }
        print!("{}", table.render());
        println!();
        for (i, event) in events.iter().enumerate() {
            println!(
                "{} {}: {}",
                event.stream_version,
                event.event_type,
                event.event.as_str()
            );
            if !event.metadata.is_empty() {
                println!(
                    "    metadata: {}",
                    serde_json::to_string(&event.metadata).unwrap_or_default()
                );
            }
            if let Some(states) = &states {
                println!("    state after: {}", states[i]);
            }
        }
        Ok(())
    }

    async fn state(
        &self,
        store: &AnyStore,
        id: &str,
        at_version: Option<u64>,
        at: Option<DateTime<Utc>>,
        json: bool,
    ) -> Result<(), CliError> {
        let all = store.read_stream(id, ..).await?;
        let Some(first) = all.first() else {
            return Err(CliError::UnknownStream(id.to_owned()));
        };
        let replay = self
            .aggregates
            .get(first.aggregate_type.as_str())
            .ok_or_else(|| CliError::UnknownAggregate(first.aggregate_type.clone()))?;
        let events: Vec<StreamEvent> = all
            .iter()
            .filter(|e| at_version.is_none_or(|v| e.stream_version <= v))
            .take_while(|e| at.is_none_or(|at| e.recorded_at <= at))
            .cloned()
            .map(StreamEvent::from)
            .collect();
        let version = events.last().map_or(0, |e| e.stream_version);
        let state = replay(id, &events)?
            .pop()
            .unwrap_or(serde_json::Value::Null);
        if json {
            print_json(&serde_json::json!({ "stream_id": id, "version": version, "state": state }));
        } else {
            println!("stream `{id}` at version {version} (of {}):", all.len());
            println!(
                "{}",
                serde_json::to_string_pretty(&state).unwrap_or_default()
            );
        }
        Ok(())
    }
}

async fn feed_tail(
    store: &AnyStore,
    from: Option<u64>,
    limit: Option<u64>,
    follow: bool,
    json: bool,
) -> Result<(), CliError> {
    let start = match from {
        Some(from) => from,
        None => store.head().await?.saturating_sub(10),
    };
    let mut position = store.feed_position_at(start).await?;
    let mut wakeups = store.wakeups();
    let mut printed = 0;
    loop {
        wakeups.mark_seen();
        let batch = store
            .read_feed(&FeedQuery::after(position).limit(500))
            .await?;
        for event in &batch.events {
            if limit.is_some_and(|limit| printed >= limit) {
                return Ok(());
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&envelope(event)).unwrap_or_default()
                );
            } else {
                println!(
                    "{:>8}  {}  {}@{}  {}  {}",
                    event.global_position,
                    event.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    event.stream_id,
                    event.stream_version,
                    event.event_type,
                    event.event.as_str()
                );
            }
            printed += 1;
        }
        position = batch.next;
        if limit.is_some_and(|limit| printed >= limit) {
            return Ok(());
        }
        if batch.events.is_empty() {
            if !follow {
                return Ok(());
            }
            tokio::select! {
                () = wakeups.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

async fn projections_status(
    store: &AnyStore,
    name: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let mut checkpoints = store.checkpoints().await?;
    if let Some(name) = name {
        let known: Vec<String> = checkpoints.iter().map(|c| c.projection.clone()).collect();
        checkpoints.retain(|c| c.projection == name);
        if checkpoints.is_empty() {
            return Err(CliError::UnknownProjection {
                name: name.to_owned(),
                known: if known.is_empty() {
                    "none has run yet".to_owned()
                } else {
                    known.join(", ")
                },
            });
        }
    }
    if json {
        print_json(&checkpoints);
        return Ok(());
    }
    if checkpoints.is_empty() {
        println!("no projection has run on {} yet", store.describe());
        return Ok(());
    }
    let mut table = Table::new(&[
        "PROJECTION",
        "VERSION",
        "CHECKPOINT",
        "HEAD",
        "EVENTS AFTER",
        "PARKED STREAMS",
        "PARKED EVENTS",
    ]);
    for c in &checkpoints {
        table.row(vec![
            c.projection.clone(),
            c.version.to_string(),
            if c.position >= c.head {
                format!("{} (caught up)", c.head)
            } else {
                c.position.to_string()
            },
            c.head.to_string(),
            c.events_after.to_string(),
            c.parked_streams.to_string(),
            c.parked_events.to_string(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

async fn dlq_list(store: &AnyStore, json: bool) -> Result<(), CliError> {
    let parked = store.parked().await?;
    if json {
        print_json(&parked);
        return Ok(());
    }
    if parked.is_empty() {
        println!("no parked streams");
        return Ok(());
    }
    let mut table = Table::new(&[
        "PROJECTION",
        "VERSION",
        "STREAM",
        "FROM VERSION",
        "EVENTS",
        "ERROR",
    ]);
    for p in &parked {
        table.row(vec![
            p.projection.clone(),
            p.version.to_string(),
            p.stream_id.clone(),
            p.first_version.to_string(),
            p.events.to_string(),
            p.error.clone().unwrap_or_default(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

async fn stats(store: &AnyStore, largest: usize, json: bool) -> Result<(), CliError> {
    let stats = store.stats(largest).await?;
    if json {
        print_json(&stats);
        return Ok(());
    }
    println!("store: {}", store.describe());
    println!("events: {}", stats.events);
    println!("streams: {}", stats.streams);
    println!("size: {} bytes", stats.size_bytes);
    println!("\nlargest streams:");
    let mut table = Table::new(&["STREAM", "EVENTS"]);
    for (stream, events) in &stats.largest_streams {
        table.row(vec![stream.clone(), events.to_string()]);
    }
    print!("{}", table.render());
    println!("\nevents per type:");
    let mut table = Table::new(&["TYPE", "EVENTS"]);
    for (event_type, events) in &stats.events_per_type {
        table.row(vec![event_type.clone(), events.to_string()]);
    }
    print!("{}", table.render());
    Ok(())
}
