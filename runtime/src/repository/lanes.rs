//! One writer per stream in process, with the events of queued commands appended together
//! ([`Repository::serialize_streams`](super::Repository::serialize_streams)): for hot
//! aggregates, which many tasks command at once.
//!
//! Each stream has a lane: the state after every event decided so far (committed, in flight,
//! or waiting), and the batch of events waiting to be appended. A command decides against that
//! state under the lane's lock, applies its events to it, and adds them to the waiting batch;
//! one task at a time (the first to find no batch in flight) appends batches, one after the
//! other, each expecting the version the previous one ended at. So in-process commands never
//! conflict with each other, and many commands cost one round trip.
//!
//! A batch that fails (another process wrote the stream, or the store refused) was written not
//! at all: its members are told, the lane's state is dropped (reloaded by the next command),
//! and each member retries like a command that met a conflict (or, when the store refused the
//! batch, tries alone). The batch decided on top of it was never tried: its members decide
//! again, and that round counts as an attempt only when the failure below was a conflict (their
//! base was stale too), never because a refused batch happened to be below theirs.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::Error;

/// The lanes of a repository's streams.
pub(super) struct Lanes<A> {
    lanes: Mutex<HashMap<String, Arc<Lane<A>>>>,
    /// Commands that may wait for one stream.
    limit: usize,
}

/// One stream's writer.
pub(super) struct Lane<A> {
    inner: Mutex<Inner<A>>,
}

pub(super) struct Inner<A> {
    /// The state after every event decided so far, and its version; `None`: to be loaded.
    head: Option<(A, u64)>,
    /// The store's count of forgotten data subjects when `head` was loaded
    /// ([`EventStore::forgets`](crate::store::EventStore::forgets)).
    forgets: u64,
    /// The batch waiting to be appended.
    open: Option<Batch>,
    /// Whether a task is appending batches.
    sending: bool,
    /// Commands in the lane (deciding or waiting for their batch).
    queued: usize,
}

/// Events decided by several commands, appended together.
struct Batch {
    /// The version the stream has before them.
    base: u64,
    events: Vec<NewEvent>,
    done: watch::Sender<Option<Outcome>>,
}

/// What became of a batch.
#[derive(Clone)]
pub(super) enum Outcome {
    /// Stored: the events as recorded, in order.
    Committed(Arc<Vec<RecordedEvent>>),
    /// Not stored: the append failed (for every member), or a batch it was decided on top of
    /// failed with a conflict. Retrying may help when it was a conflict.
    Failed { error: Arc<Error>, conflict: bool },
    /// Not tried: a batch it was decided on top of was refused (not for a conflict) or its
    /// sender was cancelled. Its members decide again, which is not another attempt.
    Untried,
}

/// A command's place in a batch: wait for the outcome, then take `range` of the events.
pub(super) struct Seat {
    pub done: watch::Receiver<Option<Outcome>>,
    pub range: Range<usize>,
    /// Whether this command's task appends (this batch and any that follow).
    pub send: bool,
}

/// A command in a lane; leaving it (dropped) frees its place.
pub(super) struct Ticket<A> {
    pub lane: Arc<Lane<A>>,
    lanes: Arc<Lanes<A>>,
    stream_id: String,
}

impl<A> Lanes<A> {
    pub fn new(limit: usize) -> Self {
        Self {
            lanes: Mutex::new(HashMap::new()),
            limit,
        }
    }

    /// Takes a place in the stream's lane.
    ///
    /// # Errors
    /// [`Error::StreamBusy`] when `limit` commands already wait there.
    pub fn enter(self: &Arc<Self>, stream_id: &str) -> Result<Ticket<A>, Error> {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        let lane = Arc::clone(lanes.entry(stream_id.to_owned()).or_insert_with(|| {
            Arc::new(Lane {
                inner: Mutex::new(Inner {
                    head: None,
                    forgets: 0,
                    open: None,
                    sending: false,
                    queued: 0,
                }),
            })
        }));
        // Counted in while the map is locked: a lane with a command in it is never forgotten
        // (else a second lane could open for the stream, and the two would conflict).
        let mut inner = lane.lock();
        drop(lanes);
        if inner.queued >= self.limit {
            return Err(Error::StreamBusy {
                stream_id: stream_id.to_owned(),
                limit: self.limit,
                cause: crate::failure::Transient::new("the stream's in-process queue is full"),
            });
        }
        inner.queued += 1;
        drop(inner);
        Ok(Ticket {
            lane,
            lanes: Arc::clone(self),
            stream_id: stream_id.to_owned(),
        })
    }
}

impl<A> Drop for Ticket<A> {
    fn drop(&mut self) {
        let idle = {
            let mut inner = self.lane.lock();
            inner.queued -= 1;
            inner.queued == 0 && !inner.sending && inner.open.is_none()
        };
        // An idle lane is forgotten (its state with it): lanes do not pile up for every
        // stream ever commanded. A lane someone entered meanwhile stays.
        if idle {
            let mut lanes = self
                .lanes
                .lanes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(lane) = lanes.get(&self.stream_id)
                && Arc::ptr_eq(lane, &self.lane)
                && lane.lock().queued == 0
            {
                lanes.remove(&self.stream_id);
            }
        }
    }
}

impl<A> Lane<A> {
    pub fn lock(&self) -> MutexGuard<'_, Inner<A>> {
        // Critical sections change plain fields, and a command's handler runs in one only
        // when it cannot panic the lane into an inconsistent state (its events are added last).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<A> Inner<A> {
    /// The state to decide on, unless it is to be loaded: dropped first when the store has
    /// forgotten a data subject since it was loaded (`forgets`, read before any load), since it
    /// may hold the subject's personal data in plain, once no batch decided on it is in flight
    /// or waiting (those would conflict with a state reloaded without them).
    pub fn head(&mut self, forgets: u64) -> Option<&mut (A, u64)> {
        if self.forgets != forgets && !self.sending && self.open.is_none() {
            self.head = None;
        }
        self.head.as_mut()
    }

    /// The state, when it stands at `version`.
    pub fn state_at(&self, version: u64) -> Option<&A> {
        self.head
            .as_ref()
            .filter(|(_, at)| *at == version)
            .map(|(state, _)| state)
    }

    /// Sets the state loaded (when no other command did meanwhile), read when the store had
    /// forgotten `forgets` data subjects.
    pub fn loaded(&mut self, state: A, version: u64, forgets: u64) {
        if self.head.is_none() {
            self.head = Some((state, version));
            self.forgets = forgets;
        }
    }

    /// Adds a command's events (the state already advanced past them, from `base`) to the
    /// waiting batch; says whether the caller is to append.
    pub fn seat(&mut self, base: u64, events: Vec<NewEvent>) -> Seat {
        let batch = self.open.get_or_insert_with(|| Batch {
            base,
            events: Vec::new(),
            done: watch::Sender::new(None),
        });
        let start = batch.events.len();
        batch.events.extend(events);
        let seat = Seat {
            done: batch.done.subscribe(),
            range: start..batch.events.len(),
            send: !self.sending,
        };
        self.sending = true;
        seat
    }

    /// The next batch to append, or `None` (and the lane has no sender any more).
    pub fn next_batch(&mut self) -> Option<(u64, Vec<NewEvent>, watch::Sender<Option<Outcome>>)> {
        match self.open.take() {
            Some(batch) => Some((batch.base, batch.events, batch.done)),
            None => {
                self.sending = false;
                None
            }
        }
    }

    /// After a failed append (`conflict`: its error when it met another writer's events;
    /// `None` when the store refused it or its sender was cancelled): the state is dropped
    /// (reloaded by the next command), and the waiting batch, decided on top of the failed one,
    /// is not tried: it failed too after a conflict (its base is as stale), else it is
    /// [`Outcome::Untried`]. The sender stops.
    pub fn failed(&mut self, conflict: Option<&Arc<Error>>) {
        self.head = None;
        self.sending = false;
        if let Some(batch) = self.open.take() {
            let outcome = conflict.map_or(Outcome::Untried, |error| Outcome::Failed {
                error: Arc::clone(error),
                conflict: true,
            });
            batch.done.send_replace(Some(outcome));
        }
    }
}

/// The task appending a lane's batches; dropped before it finished (its task cancelled), it
/// hands the lane back: the state is dropped and the waiting batch fails, so that the next
/// command appends.
pub(super) struct Sending<'a, A> {
    lane: &'a Lane<A>,
    finished: bool,
}

impl<'a, A> Sending<'a, A> {
    pub fn new(lane: &'a Lane<A>) -> Self {
        Self {
            lane,
            finished: false,
        }
    }

    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl<A> Drop for Sending<'_, A> {
    fn drop(&mut self) {
        if !self.finished {
            self.lane.lock().failed(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> NewEvent {
        NewEvent::new(
            "Happened",
            1,
            crate::event::Payload::encode(&serde_json::json!({})).unwrap(),
        )
    }

    /// A lane's state read before a data subject was forgotten is dropped at the next command
    /// (it may hold the subject's data in plain), but not while a batch decided on it is in
    /// flight or waiting: reloading without those events would make the next batch conflict.
    #[test]
    fn a_state_read_before_a_forget_is_dropped_once_no_batch_is_in_flight() {
        let lanes = Arc::new(Lanes::<String>::new(8));
        let ticket = lanes.enter("s").unwrap();
        let mut inner = ticket.lane.lock();
        assert!(inner.head(0).is_none());
        inner.loaded("Ada Lovelace".to_owned(), 1, 0);
        assert_eq!(inner.head(0).map(|head| head.1), Some(1));

        // A batch decided on it waits: the state stays, though a subject was forgotten.
        let seat = inner.seat(1, vec![event()]);
        assert!(seat.send);
        assert!(inner.head(1).is_some());
        let (base, _, done) = inner.next_batch().unwrap();
        assert_eq!(base, 1);
        assert!(inner.head(1).is_some(), "in flight");
        done.send_replace(Some(Outcome::Untried));
        assert!(inner.next_batch().is_none(), "the sender stops");

        // Nothing in flight: dropped, then loaded again under the new count and kept.
        assert!(inner.head(1).is_none());
        inner.loaded("[erased]".to_owned(), 2, 1);
        assert_eq!(inner.head(1).map(|head| head.0.as_str()), Some("[erased]"));
    }
}
