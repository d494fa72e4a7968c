//! Wake-ups over `LISTEN`/`NOTIFY`.
//!
//! Writers do not `NOTIFY` inside the append transaction: PostgreSQL serialises the commits of
//! every notifying transaction on one lock (to keep the notification queue in commit order),
//! which would turn the commit into a global write lock. Instead each store has a notifier task
//! that sends one `pg_notify` after appends commit, coalescing bursts. A notification can thus
//! be lost (a crash right after a commit): subscribers also poll, so that only delays them.
//!
//! Listening is shared: one `LISTEN` connection per store while at least one subscriber wants
//! wake-ups. Subscribers of the store that appended (clones of one `PostgresStore`, in one
//! process) are also woken at once, without the notification's delay.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};

use crate::store::FeedWakeups;

/// The shortest time between two notifications of one store.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(10);

/// Sends coalesced notifications after appends.
#[derive(Debug)]
pub(super) struct Notifier {
    pending: Arc<Notify>,
    started: Mutex<bool>,
    /// Dropped with the store, which ends the task.
    alive: watch::Sender<()>,
}

impl Notifier {
    pub fn new() -> Self {
        Self {
            pending: Arc::new(Notify::new()),
            started: Mutex::new(false),
            alive: watch::Sender::new(()),
        }
    }

    /// Signals that an append committed.
    pub fn appended(&self, pool: &PgPool, channel: &str) {
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        if !*started && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            *started = true;
            let pending = self.pending.clone();
            let mut alive = self.alive.subscribe();
            let pool = pool.clone();
            let channel = channel.to_owned();
            runtime.spawn(async move {
                let notify = || async {
                    // A notification transaction commits without waiting for its WAL flush:
                    // losing one in a crash only delays subscribers (they poll).
                    let sql =
                        "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')";
                    if let Err(error) = sqlx::query(sql).bind(&channel).execute(&pool).await {
                        tracing::debug!(%error, "could not notify subscribers; they will poll");
                    }
                };
                loop {
                    tokio::select! {
                        biased;
                        () = pending.notified() => notify().await,
                        _ = alive.changed() => {
                            // The store is gone; announce what it may have appended last.
                            notify().await;
                            return;
                        }
                    }
                    // At most one notification per interval: appends meanwhile coalesce into
                    // the next one, so a busy writer does not double its statements.
                    tokio::time::sleep(NOTIFY_INTERVAL).await;
                }
            });
        }
        drop(started);
        self.pending.notify_one();
    }
}

/// Forwards notifications of one channel to the store's subscribers.
#[derive(Debug)]
pub(super) struct Listener {
    state: Arc<Mutex<bool>>,
    hints: Arc<watch::Sender<u64>>,
}

impl Listener {
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(false)),
            hints: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Wakes this store's subscribers in this process at once (after an append through it
    /// committed), without waiting for the notification's round trip through the server.
    pub fn wake_local(&self) {
        if self.hints.receiver_count() > 0 {
            self.hints.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A receiver of wake-ups; starts the listening task when it is not running.
    pub fn subscribe(&self, pool: &PgPool, channel: &str) -> FeedWakeups {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no tokio runtime: subscribers will only poll");
            return FeedWakeups::never();
        };
        let mut running = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let wakeups = FeedWakeups::from_receiver(self.hints.subscribe());
        if !*running {
            *running = true;
            runtime.spawn(listen(
                pool.clone(),
                channel.to_owned(),
                self.state.clone(),
                self.hints.clone(),
            ));
        }
        wakeups
    }
}

async fn listen(
    pool: PgPool,
    channel: String,
    running: Arc<Mutex<bool>>,
    hints: Arc<watch::Sender<u64>>,
) {
    let mut listener = None;
    loop {
        let connection = match listener.as_mut() {
            Some(connection) => connection,
            None => match connect(&pool, &channel).await {
                Ok(connection) => listener.insert(connection),
                Err(error) => {
                    tracing::debug!(%error, "cannot LISTEN; subscribers poll until it works");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = hints.closed() => {}
                    }
                    if stop_if_unwatched(&running, &hints) {
                        return;
                    }
                    continue;
                }
            },
        };
        tokio::select! {
            received = connection.recv() => match received {
                Ok(_) => hints.send_modify(|n| *n = n.wrapping_add(1)),
                Err(error) => {
                    tracing::debug!(%error, "LISTEN connection lost; reconnecting");
                    listener = None;
                    // Whatever was notified meanwhile is lost: wake subscribers to look.
                    hints.send_modify(|n| *n = n.wrapping_add(1));
                }
            },
            () = hints.closed() => {
                if stop_if_unwatched(&running, &hints) {
                    return;
                }
            }
        }
    }
}

async fn connect(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Under the subscribe lock: stops when nobody listens any more.
fn stop_if_unwatched(running: &Mutex<bool>, hints: &watch::Sender<u64>) -> bool {
    let mut running = running.lock().unwrap_or_else(PoisonError::into_inner);
    if hints.receiver_count() == 0 {
        *running = false;
        true
    } else {
        false
    }
}
