//! [`CliError`], why a command failed: one variant per thing the user can act on, each
//! printed as one line saying what is wrong and what to do.

use crate::error::Error;

/// Why a command failed: one line saying what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// No store URL was given.
    #[error(
        "no store given: set DATABASE_URL or pass --database-url (postgres://user@host/database or sqlite://path/to/file.db)"
    )]
    NoUrl,
    /// The database cannot be reached or opened.
    #[error("cannot open {url}: {cause}")]
    Unreachable {
        /// The URL, without its password.
        url: String,
        /// Why.
        cause: String,
    },
    /// The database holds no Factum store.
    #[error(
        "{store} holds no Factum store: run your application once (it migrates the store), or check the URL and --schema"
    )]
    NotMigrated {
        /// Which database.
        store: String,
    },
    /// The stream has no events.
    #[error("stream `{0}` has no events: check its id (`factum stats` lists the largest streams)")]
    UnknownStream(String),
    /// No such projection in the store.
    #[error("no projection `{name}` in this store (known: {known})")]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// The names the store knows.
        known: String,
    },
    /// The projection is not registered in this tool (for this store).
    #[error(
        "projection `{name}` is not registered in this tool for {store}: build your own with factum::cli::Cli::new().projection(...) or .sqlite_projection(...)"
    )]
    UnregisteredProjection {
        /// The projection.
        name: String,
        /// The store.
        store: String,
    },
    /// The stream's aggregate type is not registered in this tool.
    #[error(
        "aggregate type `{0}` is not registered in this tool: build your own with factum::cli::Cli::new().aggregate::<{0}>()"
    )]
    UnknownAggregate(String),
    /// The catalog check failed.
    #[error("{0}")]
    Catalog(String),
    /// A retried parked stream failed again.
    #[error(
        "`{stream}` stopped again at version {stream_version} ({handled} events handled before it): {error}; fix the cause and retry, or skip it"
    )]
    StoppedAgain {
        /// The stream.
        stream: String,
        /// The version that failed.
        stream_version: u64,
        /// Events handled before it.
        handled: u64,
        /// Its failure.
        error: String,
    },
    /// A projection stopped (its batch rolled back).
    #[error("{0}")]
    Runner(#[from] crate::projection::RunnerError),
    /// The store failed.
    #[error("the store failed: {0}")]
    Store(#[from] Error),
}

impl CliError {
    /// A failure of SQL the tool runs itself (a projection's reset).
    pub(super) fn database(error: sqlx::Error) -> Self {
        Self::Store(Error::Database(error))
    }
}
