//! Hints that the global feed may have grown, from a store to its live readers. A store signals
//! them (PostgreSQL through `LISTEN`/`NOTIFY` and at once in the appending process, the other
//! stores directly); readers also poll, so a lost hint delays delivery, it never loses an event.

use std::sync::Arc;

use tokio::sync::watch;

/// Hints that the feed may have grown. Hints coalesce: many appends may give one hint.
#[derive(Debug, Clone)]
pub struct FeedWakeups {
    rx: Option<watch::Receiver<u64>>,
}

impl FeedWakeups {
    /// Hints that never fire (subscribers poll).
    #[must_use]
    pub fn never() -> Self {
        Self { rx: None }
    }

    /// Hints from a watch channel whose value changes on each hint.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn from_receiver(rx: watch::Receiver<u64>) -> Self {
        Self { rx: Some(rx) }
    }

    /// Marks every hint so far as seen.
    pub fn mark_seen(&mut self) {
        if let Some(rx) = &mut self.rx {
            rx.borrow_and_update();
        }
    }

    /// Waits for a hint not yet seen (forever, when the store gives none).
    pub async fn changed(&mut self) {
        if let Some(rx) = &mut self.rx
            && rx.changed().await.is_ok()
        {
            return;
        }
        // The sender is gone (or never existed): only polling remains.
        self.rx = None;
        std::future::pending::<()>().await;
    }
}

/// The sending side of [`FeedWakeups`], held by a store.
#[derive(Debug, Clone)]
pub struct FeedNotifier {
    tx: Arc<watch::Sender<u64>>,
}

impl Default for FeedNotifier {
    fn default() -> Self {
        Self::new()
    }
}

impl FeedNotifier {
    /// A notifier with no hint yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Signals that the feed may have grown.
    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver of the hints.
    #[must_use]
    pub fn subscribe(&self) -> FeedWakeups {
        FeedWakeups {
            rx: Some(self.tx.subscribe()),
        }
    }
}
