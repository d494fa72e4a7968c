//! What every projection runner reports, whatever its store: its status, its version's state,
//! and why it stopped.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{HandlerError, Projection};
use crate::error::Error;
use crate::store::FeedPosition;

#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
impl RunnerError {
    pub(crate) fn handler<P: Projection>(cause: HandlerError) -> Self {
        Self::Handler {
            projection: P::NAME,
            cause,
        }
    }
}

impl RunnerError {
    /// Whether waiting and trying again may succeed (the database is unavailable, a handler's
    /// failure is transient): a running runner then retries by itself.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(error) => error.is_transient(),
            Self::Handler { cause, .. } => cause.is_transient(),
            Self::LeaseLost { .. } => true,
            Self::NotRunning { .. } | Self::Standby { .. } => false,
        }
    }
}

/// What stops a projection runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),

    /// A [`RunnerHandle`](super::RunnerHandle)'s runner is not running: `run` returned (see
    /// its state), or was never called.
    #[error(
        "projection `{projection}`'s runner is not running (see its state); start it, or use a runner of its own for one-off work"
    )]
    NotRunning {
        /// The projection.
        projection: &'static str,
    },

    /// Another runner took the lease over (this one's lease connection died, say): this one
    /// applied nothing after that, and competes for the lease again.
    #[error(
        "projection `{projection}`: another runner took the lease over; this one stopped applying and waits for the lease again"
    )]
    LeaseLost {
        /// The projection.
        projection: &'static str,
    },

    /// A [`RunnerHandle`](super::RunnerHandle)'s runner is on standby: another instance holds
    /// the lease, and only the instance holding it applies events.
    #[error(
        "projection `{projection}`'s runner is on standby while another instance holds the lease; ask the handle of the instance that runs it"
    )]
    Standby {
        /// The projection.
        projection: &'static str,
    },

    /// A handler kept failing after the retries (the batch was rolled back: nothing of it is
    /// applied, the checkpoint did not move).
    #[error("projection `{projection}` stopped: {cause}")]
    Handler {
        /// The projection.
        projection: &'static str,
        /// The last failure.
        #[source]
        cause: HandlerError,
    },
}

/// Where a projection stands.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectionStatus {
    /// The projection.
    pub name: &'static str,
    /// Its version.
    pub version: u32,
    /// The position it has processed up to.
    pub checkpoint: FeedPosition,
    /// The newest position in the store.
    pub head: FeedPosition,
    /// Events of the projection's types after the checkpoint.
    pub event_lag: u64,
    /// How long the oldest of those has been waiting (zero when caught up).
    pub time_lag: Duration,
    /// Streams parked in the dead-letter queue.
    pub parked_streams: u64,
    /// Events waiting in the dead-letter queue.
    pub parked_events: u64,
    /// This version's state (`None`: never run with a runner's `run`).
    pub state: Option<VersionState>,
    /// How far through the store the checkpoint is, from 0 to 1 (by global position: an
    /// estimate, for rebuild progress).
    pub progress: f64,
    /// What the runner asked is doing (through a [`RunnerHandle`](super::RunnerHandle): the
    /// running one).
    pub runner: RunnerState,
}

/// What a runner is doing, as its [`RunnerHandle`](super::RunnerHandle) sees it (without asking
/// the database, so it answers during an outage).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunnerState {
    /// `run` has not been called yet.
    NotStarted,
    /// Waiting for the lease, which another instance holds (it takes over when that one
    /// stops or dies).
    Standby,
    /// Holding the lease: catching up or following the feed.
    Running,
    /// Failing for a reason that may pass (the database is unavailable, a transient handler
    /// failure): trying again, with backoff, since `since`. The lease is released meanwhile,
    /// except while a batch is retried in place (a handler's failure within its retry budget).
    Retrying {
        /// When the failures began.
        since: DateTime<Utc>,
        /// Attempts that failed since then.
        attempts: u32,
        /// The last failure.
        error: String,
    },
    /// `run` returned: on shutdown or when the version was retired (`error: None`), or on a
    /// permanent error.
    Stopped {
        /// Why, when it was an error.
        error: Option<String>,
    },
}

/// Failures in a row since the last success, as [`RunnerState::Retrying`] reports them: kept
/// by every loop that retries (runners, side effects, a saga's commands and timeouts).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[derive(Debug, Default)]
pub(crate) struct Failing(Option<(DateTime<Utc>, u32)>);

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl Failing {
    /// Counts a failure: the attempts so far, and the state to report.
    pub fn record(&mut self, error: impl ToString) -> (u32, RunnerState) {
        let (since, attempts) = self.0.get_or_insert((Utc::now(), 0));
        *attempts += 1;
        let state = RunnerState::Retrying {
            since: *since,
            attempts: *attempts,
            error: error.to_string(),
        };
        (*attempts, state)
    }

    /// A success: whether it ended failures (the loop recovered).
    pub fn recovered(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.0.is_some()
    }
}

/// Where a version of a projection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionState {
    /// Replaying the history beside the active version (side effects off).
    Building,
    /// Serving: the version readers should read.
    Active,
    /// Replaced by a newer version (or started after one took over): does not run.
    Retired,
}

#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
impl VersionState {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "building" => Some(Self::Building),
            "active" => Some(Self::Active),
            "retired" => Some(Self::Retired),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }
}

/// A stream parked in a projection's dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedStream {
    /// The stream.
    pub stream_id: String,
    /// The version of its first parked event (the one that failed).
    pub first_version: u64,
    /// Its parked events.
    pub events: u64,
    /// The failure of its first parked event.
    pub error: Option<String>,
    /// How often that event was tried.
    pub attempts: u32,
    /// When the stream was parked.
    pub parked_at: DateTime<Utc>,
}

/// What retrying a parked stream did.
#[derive(Debug)]
#[non_exhaustive]
pub enum RetryOutcome {
    /// Every parked event was applied, in order: the stream flows again.
    Drained {
        /// Events applied.
        handled: u64,
    },
    /// An event failed again: it and the events after it stay parked.
    Stopped {
        /// Events applied before it.
        handled: u64,
        /// Its version.
        stream_version: u64,
        /// Its failure.
        error: HandlerError,
    },
}
