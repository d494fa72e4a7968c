//! Loading an aggregate: its history replayed from the store (from a snapshot when one is
//! usable), each event decoded straight from the store's buffer; and the temporal queries (the
//! state as of a version or a time).

use chrono::{DateTime, Utc};

use super::{Loaded, Repository, Snapshots};
use crate::aggregate::Aggregate;
use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
use crate::store::{EventStore, HistoryItem, StreamEvent, StreamEventRef};

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// Rebuilds an aggregate from its stream (from its latest snapshot, when snapshots are on).
    /// A stream that does not exist loads as the default state at version 0.
    ///
    /// # Errors
    /// [`Error::Decode`] when a stored event does not decode (the load stops; nothing is
    /// skipped), [`Error::AggregateTypeMismatch`] when the stream belongs to another aggregate
    /// type, or a store error.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>> {
        let measured = std::time::Instant::now();
        // Only a snapshot policy asks how long a load took.
        let started = self.snapshots.as_ref().map(|_| self.clock.now());
        let mut replay = Replay::new(id, self.snapshots.as_ref());
        self.store
            .replay_history(id, A::TYPE, self.snapshots.is_some(), |item| {
                replay.visit(item)
            })
            .await?;
        let replay = if replay.unusable_snapshot {
            // The snapshot was unusable, and the events read start after it: replay them all.
            let mut replay = Replay::new(id, None);
            self.store
                .replay_history(id, A::TYPE, false, |item| replay.visit(item))
                .await?;
            replay
        } else {
            replay
        };
        let (replayed, snapshot_taken_at) = (replay.replayed, replay.snapshot_taken_at);
        let loaded = replay.finish();
        crate::metrics::loaded(
            A::TYPE,
            replayed,
            snapshot_taken_at.is_some(),
            measured.elapsed(),
        );
        if let (Some(snapshots), Some(started)) = (&self.snapshots, started) {
            let now = self.clock.now();
            let took = (now - started).to_std().unwrap_or_default();
            if let Some(reason) =
                snapshots
                    .policy
                    .after_load(replayed, took, snapshot_taken_at, now)
            {
                tracing::debug!(
                    stream_id = id,
                    version = loaded.version,
                    ?reason,
                    "taking a snapshot after a load"
                );
                self.save_snapshot(id, &loaded.state, loaded.version, snapshots)
                    .await;
            }
        }
        Ok(loaded)
    }

    /// The aggregate as it was after the event at `version` (or after its last event, if the
    /// stream is shorter).
    ///
    /// # Errors
    /// As [`Repository::load`].
    pub async fn load_at_version(&self, id: &str, version: u64) -> Result<Loaded<A>> {
        let events = self.store.read_stream_events(id, 1..=version).await?;
        rehydrate(id, &events)
    }

    /// The aggregate as it was at `at`: after the events recorded at or before it.
    ///
    /// # Errors
    /// As [`Repository::load`].
    pub async fn load_as_of(&self, id: &str, at: DateTime<Utc>) -> Result<Loaded<A>> {
        let events = self.store.read_stream(id, 1..).await?;
        // A stream's events are recorded in version order; stop at the first one after `at`, so
        // that a state never holds an event without its predecessors.
        let events: Vec<StreamEvent> = events
            .into_iter()
            .take_while(|event| event.recorded_at <= at)
            .map(StreamEvent::from)
            .collect();
        rehydrate(id, &events)
    }
}

/// The snapshot's state, when the snapshot is usable (else a warning says why not).
fn restore_snapshot<A: Aggregate>(
    id: &str,
    snapshot: &Snapshot,
    policy: &Snapshots<A>,
) -> Option<A> {
    let reason = if snapshot.aggregate_type != A::TYPE {
        format!("it is of aggregate type `{}`", snapshot.aggregate_type)
    } else if snapshot.state_version != A::STATE_VERSION {
        format!(
            "it has state version {}, this build {}",
            snapshot.state_version,
            A::STATE_VERSION
        )
    } else {
        match (policy.decode)(&snapshot.state) {
            Ok(state) => return Some(state),
            Err(error) => format!("it does not decode: {error}"),
        }
    };
    tracing::warn!(
        stream_id = id,
        snapshot_version = snapshot.stream_version,
        reason,
        "ignoring the snapshot; rebuilding from events"
    );
    None
}

/// Rebuilds an aggregate as a store replays its history: from the snapshot (if usable), then
/// each event decoded straight from the store's buffer and applied.
struct Replay<'a, A> {
    stream_id: &'a str,
    policy: Option<&'a Snapshots<A>>,
    state: A,
    version: u64,
    /// The snapshot could not be used: the events that follow it are not enough.
    unusable_snapshot: bool,
    /// Events applied (after the snapshot, if one was used).
    replayed: u64,
    /// When the snapshot used was taken.
    snapshot_taken_at: Option<DateTime<Utc>>,
}

impl<'a, A: Aggregate> Replay<'a, A> {
    fn new(stream_id: &'a str, policy: Option<&'a Snapshots<A>>) -> Self {
        Self {
            stream_id,
            policy,
            state: A::default(),
            version: 0,
            unusable_snapshot: false,
            replayed: 0,
            snapshot_taken_at: None,
        }
    }

    fn visit(&mut self, item: HistoryItem<'_>) -> Result<()> {
        match item {
            HistoryItem::Snapshot(snapshot) => {
                match self
                    .policy
                    .and_then(|policy| restore_snapshot(self.stream_id, &snapshot, policy))
                {
                    Some(state) => {
                        self.state = state;
                        self.version = snapshot.stream_version;
                        self.snapshot_taken_at = Some(snapshot.taken_at);
                    }
                    None => self.unusable_snapshot = true,
                }
                Ok(())
            }
            HistoryItem::Event(_) if self.unusable_snapshot => Ok(()),
            HistoryItem::Event(event) => self.apply(event),
        }
    }

    fn apply(&mut self, event: StreamEventRef<'_>) -> Result<()> {
        if event.aggregate_type != A::TYPE {
            return Err(Error::AggregateTypeMismatch {
                stream_id: self.stream_id.to_owned(),
                existing: event.aggregate_type.to_owned(),
                requested: A::TYPE.to_owned(),
            });
        }
        let state = &mut self.state;
        event.decode_each::<A::Event>(self.stream_id, &mut |decoded| state.apply(&decoded))?;
        self.version = event.stream_version;
        self.replayed += 1;
        Ok(())
    }

    /// The rebuilt aggregate (see `unusable_snapshot` first: then it lacks the snapshot's part).
    fn finish(self) -> Loaded<A> {
        Loaded {
            state: self.state,
            version: self.version,
        }
    }
}

/// Rebuilds an aggregate from its stored events, checking that they belong to its type.
///
/// # Errors
/// [`Error::AggregateTypeMismatch`] or [`Error::Decode`].
pub fn rehydrate<A: Aggregate>(stream_id: &str, events: &[StreamEvent]) -> Result<Loaded<A>> {
    let mut replay = Replay::new(stream_id, None);
    for event in events {
        replay.apply(event.borrow())?;
    }
    Ok(Loaded {
        state: replay.state,
        version: replay.version,
    })
}
