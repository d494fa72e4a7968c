//! Transient or permanent: what a failure calls for, decided in one place for every runner,
//! dispatcher and store error.
//!
//! - An **outage** is the database's, not the work's: it is unreachable, restarting, failing
//!   over (read-only), out of connections, or busy (SQLite's write lock). Waiting cures it;
//!   runners retry for as long as it lasts and park nothing.
//! - A **transient** failure may pass on its own: a deadlock, a serialization failure, a
//!   statement timeout, a lock wait that gave up, or an error a handler marked [`Transient`]
//!   (a 503 from another service). Runners retry it within a budget, then park.
//! - Anything else is **permanent** for the work at hand: retrying the same input gives the
//!   same answer.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// An error a handler marks as transient: it comes from a system that may recover on its own
/// (another service answering 503, a search index restarting), so a runner retries the event
/// within its transient budget rather than parking it.
///
/// Return it from a handler, or keep it as the `#[source]` of your own error (not behind
/// `#[error(transparent)]`, which hides the source chain):
///
/// ```
/// # #[derive(Debug)] struct Status(u16);
/// # impl std::fmt::Display for Status {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "HTTP {}", self.0) }
/// # }
/// # impl std::error::Error for Status {}
/// fn check(status: Status) -> Result<(), factum::Transient> {
///     match status.0 {
///         503 => Err(factum::Transient::new(status)),
///         _ => Ok(()),
///     }
/// }
/// assert!(check(Status(503)).is_err());
/// ```
#[derive(Debug)]
pub struct Transient {
    cause: Box<dyn StdError + Send + Sync>,
}

impl Transient {
    /// `cause`, marked as transient.
    #[must_use]
    pub fn new(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            cause: cause.into(),
        }
    }

    /// The error it marks.
    #[must_use]
    pub fn cause(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self.cause.as_ref()
    }
}

impl fmt::Display for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (transient)", self.cause)
    }
}

impl StdError for Transient {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.cause.as_ref())
    }
}

/// The longest wait between two attempts of anything that retries.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The wait before retry number `attempt` (from 1) from `base`: doubling, at most
/// [`MAX_BACKOFF`], then a random part of it taken off (up to half), so that runners that
/// failed together do not retry together.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let doubled = base.saturating_mul(2_u32.saturating_pow(attempt.saturating_sub(1).min(20)));
    let capped = doubled.min(MAX_BACKOFF);
    capped.mul_f64(1.0 - fastrand::f64() / 2.0)
}

/// What a failure calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The database is unavailable for now: wait and retry, for as long as it takes.
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    Outage,
    /// It may pass: retry within a budget.
    Transient,
    /// Retrying the same work gives the same answer.
    Permanent,
}

impl Class {
    /// Whether retrying may help.
    pub fn retryable(self) -> bool {
        self != Self::Permanent
    }
}

/// The class of `error`, from the first error of its source chain that says (a
/// [`Transient`] mark or a database error); `Permanent` when none does.
pub(crate) fn classify(error: &(dyn StdError + 'static)) -> Class {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<Transient>() {
            return Class::Transient;
        }
        #[cfg(feature = "sql")]
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            return of_sqlx(error);
        }
        current = error.source();
    }
    Class::Permanent
}

/// The class of a database error, by sqlx's kind and the server's SQLSTATE (PostgreSQL) or
/// result code (SQLite).
#[cfg(feature = "sql")]
fn of_sqlx(error: &sqlx::Error) -> Class {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => Class::Outage,
        sqlx::Error::Database(database) => database
            .code()
            .map_or(Class::Permanent, |code| of_code(&code)),
        // The application closed the pool, bad configuration, a row that does not decode...
        _ => Class::Permanent,
    }
}

/// The class of an error code: a five-character SQLSTATE from PostgreSQL, a (possibly
/// extended) numeric result code from SQLite.
#[cfg(feature = "sql")]
fn of_code(code: &str) -> Class {
    // A SQLSTATE has five characters (some all digits); SQLite's codes have at most four.
    if code.len() < 5
        && let Ok(code) = code.parse::<u32>()
    {
        // SQLite: the primary result code is the low byte of an extended one.
        return match code & 0xff {
            // BUSY, LOCKED: another connection holds the write lock (past the busy timeout);
            // IOERR, FULL, CANTOPEN, PROTOCOL: the file system.
            5 | 6 | 10 | 13 | 14 | 15 => Class::Outage,
            _ => Class::Permanent,
        };
    }
    match code {
        // Deadlock, serialization failure, statement timeout (or cancel), lock not available.
        "40P01" | "40001" | "57014" | "55P03" => Class::Transient,
        // Read-only transaction (a failover in progress), admin/crash shutdown, cannot
        // connect now (starting up), idle-session and transaction timeouts end the session.
        "25006" | "57P01" | "57P02" | "57P03" | "57P05" | "25P03" => Class::Outage,
        // Connection exceptions, insufficient resources, system errors (I/O).
        _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("58") => {
            Class::Outage
        }
        _ => Class::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(Box<dyn StdError + Send + Sync>);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "wrapped")
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(self.0.as_ref())
        }
    }

    #[test]
    fn a_transient_mark_is_found_anywhere_in_the_chain() {
        let io = std::io::Error::other("503 Service Unavailable");
        assert_eq!(classify(&Transient::new(io)), Class::Transient);
        let nested = Wrapper(Box::new(Transient::new("index restarting")));
        assert_eq!(classify(&nested), Class::Transient);
        assert_eq!(classify(&Wrapper("a bug".into())), Class::Permanent);
        assert_eq!(
            Transient::new("index restarting").to_string(),
            "index restarting (transient)"
        );
    }

    #[cfg(feature = "sql")]
    #[test]
    fn database_errors_are_classified_by_kind_and_code() {
        assert_eq!(
            classify(&sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset
            ))),
            Class::Outage
        );
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), Class::Outage);
        assert_eq!(classify(&sqlx::Error::PoolClosed), Class::Permanent);
        assert_eq!(classify(&sqlx::Error::RowNotFound), Class::Permanent);
        let wrapped = Wrapper(Box::new(sqlx::Error::PoolTimedOut));
        assert_eq!(classify(&wrapped), Class::Outage);
        for code in ["40P01", "40001", "57014", "55P03"] {
            assert_eq!(of_code(code), Class::Transient, "{code}");
        }
        for code in [
            "25006", "57P01", "57P02", "57P03", "08006", "08001", "53300", "58030",
        ] {
            assert_eq!(of_code(code), Class::Outage, "{code}");
        }
        for code in ["23505", "42P01", "22021", "XX000", "P0001"] {
            assert_eq!(of_code(code), Class::Permanent, "{code}");
        }
        // SQLite: BUSY, BUSY_SNAPSHOT (517), LOCKED, IOERR_WRITE (778); CONSTRAINT is not.
        for code in ["5", "517", "6", "778"] {
            assert_eq!(of_code(code), Class::Outage, "{code}");
        }
        assert_eq!(of_code("19"), Class::Permanent);
        assert_eq!(of_code("2067"), Class::Permanent);
    }
}
