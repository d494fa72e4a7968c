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

mod archive;
mod args;
mod catalog;
mod cluster;
mod console;
mod dlq;
mod error;
mod feed;
mod output;
mod projections;
mod rebuild;
#[cfg(any(feature = "nats", feature = "rabbitmq"))]
mod relay;
mod status;
mod store;
mod stream;
mod transfer;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use serde::Serialize;

use self::args::{
    Args, CatalogCommand, Command, DlqCommand, FeedCommand, ProjectionsCommand, StreamCommand,
};
pub use self::error::CliError;
use self::projections::{Registered, Registration};
use self::store::AnyStore;
use self::stream::Replayers;
use crate::aggregate::Aggregate;
use crate::catalog::Catalog;
use crate::projection::{Projection, Reset};

/// The tool, with the aggregates it knows.
#[derive(Clone, Default)]
pub struct Cli {
    aggregates: Replayers,
    catalog: Option<(Catalog, PathBuf)>,
    projections: BTreeMap<&'static str, Vec<Arc<dyn Registered>>>,
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
        self.aggregates.insert(A::TYPE, stream::replay::<A>);
        self
    }

    /// Registers a projection for `projections rebuild` (its `#[reset]` method clears the read
    /// model) and `dlq retry|skip`, on the stores it runs on.
    #[must_use]
    pub fn projection<P>(mut self, new: impl Fn() -> P + Send + Sync + 'static) -> Self
    where
        P: Projection + Reset + Sync,
    {
        let registration = Registration {
            new,
            projection: PhantomData,
        };
        self.projections
            .entry(P::NAME)
            .or_default()
            .push(Arc::new(registration));
        self
    }

    /// The registered projection `name` for this store.
    fn registered(&self, store: &AnyStore, name: &str) -> Result<&dyn Registered, CliError> {
        self.projections
            .get(name)
            .and_then(|entries| entries.iter().find(|e| e.runs_on(store)))
            .map(Arc::as_ref)
            .ok_or_else(|| CliError::UnregisteredProjection {
                name: name.to_owned(),
                store: store.describe(),
            })
    }

    /// Registers the application's event catalog and the directory it is written to, for
    /// `catalog check`.
    #[must_use]
    pub fn catalog(mut self, catalog: Catalog, dir: impl Into<PathBuf>) -> Self {
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
        let json = args.json;
        if let Command::Catalog {
            command: CatalogCommand::Check { dir, consumers },
        } = &args.command
        {
            if !consumers.is_empty() {
                catalog::check_consumers(self.catalog.as_ref(), dir.as_deref(), consumers, json)?;
                if self.catalog.is_none() {
                    return Ok(());
                }
            }
            return catalog::check(self.catalog.as_ref(), dir.as_deref(), json);
        }
        let url = args.database_url.as_deref().ok_or(CliError::NoUrl)?;
        if let Command::Import { input } = &args.command {
            let store = AnyStore::create(url, &args.schema).await?;
            return transfer::import(&store, input.as_deref(), json).await;
        }
        let store = AnyStore::open(url, &args.schema).await?;
        match &args.command {
            Command::Stream {
                command: StreamCommand::Show { id },
            } => stream::show(&self.aggregates, &store, id, json).await,
            Command::State { id, at_version, at } => {
                stream::state(&self.aggregates, &store, id, *at_version, *at, json).await
            }
            Command::Feed {
                command:
                    FeedCommand::Tail {
                        from,
                        limit,
                        no_follow,
                    },
            } => feed::tail(&store, *from, *limit, !no_follow, json).await,
            Command::Projections {
                command: ProjectionsCommand::Status { name },
            } => status::projections(&store, name.as_deref(), json).await,
            Command::Projections {
                command: ProjectionsCommand::Rebuild { name },
            } => rebuild::rebuild(self.registered(&store, name)?, &store, name, json).await,
            Command::Dlq {
                command: DlqCommand::List,
            } => dlq::list(&store, json).await,
            Command::Dlq {
                command: DlqCommand::Retry { projection, stream },
            } => dlq::retry(self.registered(&store, projection)?, &store, stream, json).await,
            Command::Dlq {
                command: DlqCommand::Skip { projection, stream },
            } => dlq::skip(self.registered(&store, projection)?, &store, stream, json).await,
            #[cfg(any(feature = "nats", feature = "rabbitmq"))]
            Command::Relay { command } => relay::run(&store, command, json).await,
            Command::Stats { largest } => status::stats(&store, *largest, json).await,
            Command::Forget { subject } => store::forget(&store, subject, json).await,
            Command::AdoptCluster => cluster::adopt(&store, json).await,
            Command::Archive { command } => archive::run(&store, command, json).await,
            Command::Export {
                streams,
                tenant,
                output,
            } => {
                // Personal data leaves sealed, as stored: an export holds no plaintext of it,
                // and a copy replayed elsewhere without the keys reads it as erased.
                let sealed = store
                    .without_key_provider()
                    .tenants(tenant.as_deref())
                    .await?;
                transfer::export(&sealed, streams, output.as_deref(), json).await
            }
            Command::Serve {
                listen,
                allow_actions,
                token,
                metrics_url,
                tenant,
            } => {
                let token = allow_actions.then(|| token.clone().unwrap_or_default());
                let store = match (tenant, &store) {
                    // Its pages read the tables with SQL of their own, which row-level
                    // security scopes on PostgreSQL; SQLite has none.
                    (Some(_), AnyStore::Sqlite(_)) => {
                        return Err(CliError::Usage(
                            "--tenant needs a PostgreSQL store (connected as the application role, whose row-level security keeps the other tenants out of every page): on SQLite the console would show every tenant's rows; serve the whole store instead".to_owned(),
                        ));
                    }
                    (Some(tenant), _) => store.tenants(Some(tenant)).await?,
                    // A store with tenants: every tenant's streams, and each tenant's
                    // runners with their tenant named.
                    (None, AnyStore::Postgres(_)) if store.has_tenants().await? => {
                        store.tenants(None).await?
                    }
                    (None, _) => store,
                };
                console::serve(self, store, *listen, token, metrics_url.clone()).await
            }
            Command::Import { .. } => Ok(()),
            Command::Catalog { .. } => Ok(()),
        }
    }
}
