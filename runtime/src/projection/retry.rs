//! How a runner meets a failing batch, in one place: how often and how long it retries, and
//! what a failure calls for (retry quickly then park, retry within the transient budget then
//! park, or wait out the database's outage without parking anything).

use std::time::Duration;

use super::HandlerError;
use crate::failure::Class;

/// Retries of a failing batch: `max` quick ones (doubling from `backoff`) for an error that
/// may be the event's; for a transient one, retries until `transient_budget` has passed since
/// the first failure, the wait doubling up to [`MAX_BACKOFF`](crate::failure::MAX_BACKOFF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retries {
    pub max: u32,
    pub backoff: Duration,
    pub transient_budget: Duration,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            max: 3,
            backoff: Duration::from_millis(100),
            transient_budget: Duration::from_secs(300),
        }
    }
}

impl Retries {
    /// The wait before retry number `attempt` (from 1): doubling from `backoff`, capped, with
    /// jitter.
    pub fn delay(self, attempt: u32) -> Duration {
        backoff(self.backoff, attempt)
    }
}

pub(crate) use crate::failure::backoff;

/// What a handler's failure calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The event may be at fault (a handler's error of no known class): a few quick retries,
    /// then park its stream; none when retrying cannot help (it does not decode).
    Event {
        /// Whether retrying may help.
        retry: bool,
    },
    /// It may pass (a deadlock, a timeout, another system's 503): retry within the transient
    /// budget, then park.
    Transient,
    /// The database is unavailable: the event is not at fault, parking would be wrong; the
    /// runner waits it out.
    Outage,
}

impl Failure {
    pub fn of(cause: &HandlerError) -> Self {
        let (HandlerError::Handler { cause, .. } | HandlerError::Flush { cause }) = cause else {
            return Self::Event { retry: false };
        };
        match crate::failure::classify(cause.as_ref()) {
            Class::Outage => Self::Outage,
            Class::Transient => Self::Transient,
            Class::Permanent => Self::Event { retry: true },
        }
    }
}
