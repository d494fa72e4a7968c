//! A real store, observed: counts the calls a repository makes (each one is a round trip on
//! PostgreSQL) and can hold some of them back, to line up races that are otherwise a matter of
//! luck. Every call goes to the store unchanged.

#![allow(dead_code)] // each test file uses its own part

use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use factum::{
    EventStore, ExpectedVersion, FeedBatch, FeedQuery, HistoryItem, KnownHead, NewEvent,
    RecordedEvent, Snapshot, StreamEvent,
};

#[derive(Debug, Clone)]
pub struct Probe<S> {
    inner: S,
    reads: Arc<AtomicUsize>,
    appends: Arc<AtomicUsize>,
    /// How long `read_event` waits after the store answered.
    read_event_delay: Duration,
    /// How long an append waits before it goes to the store.
    append_delay: Duration,
}

impl<S> Probe<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            reads: Arc::default(),
            appends: Arc::default(),
            read_event_delay: Duration::ZERO,
            append_delay: Duration::ZERO,
        }
    }

    /// `read_event` answers `delay` after the store did (the answer is as of the read).
    pub fn hold_read_event(mut self, delay: Duration) -> Self {
        self.read_event_delay = delay;
        self
    }

    /// Appends go to the store `delay` after they were asked for.
    pub fn hold_appends(mut self, delay: Duration) -> Self {
        self.append_delay = delay;
        self
    }

    /// Reads so far: stream reads, replays, versions, events by id and snapshots.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Appends so far.
    pub fn appends(&self) -> usize {
        self.appends.load(Ordering::SeqCst)
    }

    async fn before_append(&self) {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if !self.append_delay.is_zero() {
            tokio::time::sleep(self.append_delay).await;
        }
    }
}

impl<S: EventStore> EventStore for Probe<S> {
    async fn append(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> factum::Result<Vec<RecordedEvent>> {
        self.before_append().await;
        self.inner
            .append(stream_id, aggregate_type, expected, events)
            .await
    }

    async fn append_after(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        head: KnownHead,
        events: Vec<NewEvent>,
    ) -> factum::Result<Vec<RecordedEvent>> {
        self.before_append().await;
        self.inner
            .append_after(stream_id, aggregate_type, head, events)
            .await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> factum::Result<Vec<RecordedEvent>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream(stream_id, versions).await
    }

    async fn read_feed(&self, query: &FeedQuery) -> factum::Result<FeedBatch> {
        self.inner.read_feed(query).await
    }

    async fn read_stream_events(
        &self,
        stream_id: &str,
        versions: impl RangeBounds<u64> + Send,
    ) -> factum::Result<Vec<StreamEvent>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream_events(stream_id, versions).await
    }

    async fn replay_history<F>(
        &self,
        stream_id: &str,
        aggregate_type: &str,
        with_snapshot: bool,
        visit: F,
    ) -> factum::Result<()>
    where
        F: FnMut(HistoryItem<'_>) -> factum::Result<()> + Send,
    {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner
            .replay_history(stream_id, aggregate_type, with_snapshot, visit)
            .await
    }

    async fn stream_version(&self, stream_id: &str) -> factum::Result<u64> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.stream_version(stream_id).await
    }

    async fn read_event(&self, event_id: factum::Uuid) -> factum::Result<Option<RecordedEvent>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let found = self.inner.read_event(event_id).await;
        if !self.read_event_delay.is_zero() {
            tokio::time::sleep(self.read_event_delay).await;
        }
        found
    }

    async fn load_snapshot(&self, stream_id: &str) -> factum::Result<Option<Snapshot>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.load_snapshot(stream_id).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> factum::Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
}
