//! How a runner meets a failing batch, in one place: how often and how long it retries, and
//! what a failure calls for (retry, park the event's stream, or stop because the database is
//! gone).

use std::time::Duration;

use super::HandlerError;

/// Retries of a failing batch: `max` of them, with doubling backoff from `backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retries {
    pub max: u32,
    pub backoff: Duration,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            max: 3,
            backoff: Duration::from_millis(100),
        }
    }
}

impl Retries {
    /// The wait before retry number `attempt` (from 1).
    pub fn delay(self, attempt: u32) -> Duration {
        self.backoff * 2_u32.saturating_pow(attempt.saturating_sub(1))
    }

    /// How many times an event that failed with `cause` was tried.
    pub fn attempts(self, cause: &HandlerError) -> u32 {
        if cause.is_transient() {
            self.max.saturating_add(1)
        } else {
            1
        }
    }
}

/// What a handler's failure calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The event cannot be handled now, and perhaps never: retry, then park its stream.
    Event {
        /// Whether retrying may help (a decoding failure never will).
        transient: bool,
    },
    /// The database is unreachable: the event is not at fault, parking would be wrong.
    Outage,
}

impl Failure {
    /// Whether retrying may help: an outage may end, a transient failure may pass.
    pub fn retryable(self) -> bool {
        !matches!(self, Self::Event { transient: false })
    }

    pub fn of(cause: &HandlerError) -> Self {
        if is_outage(cause) {
            Self::Outage
        } else {
            Self::Event {
                transient: cause.is_transient(),
            }
        }
    }
}

/// Whether a handler failed because the database is unreachable.
fn is_outage(cause: &HandlerError) -> bool {
    let (HandlerError::Handler { cause, .. } | HandlerError::Flush { cause }) = cause else {
        return false;
    };
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(cause.as_ref());
    while let Some(error) = current {
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            return matches!(
                error,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            );
        }
        current = error.source();
    }
    false
}
