//! Group commit: concurrent appends to one store coalesced into one database transaction.
//!
//! A database commits one transaction at a time per connection and pays for each: a round
//! trip, a statement, a commit record and (with durable commits) a flush of the log. When many
//! tasks append at once, most of that is the same work done again. The group takes a *slot*
//! per append while fewer than [`GroupCommit::in_flight`] appends or groups are at the database;
//! an append that finds every slot taken waits in a queue, and the next slot to come free takes
//! the whole queue (up to [`GroupCommit::max_appends`]) to the database as one group. There is
//! no timer by default: a lone append goes straight to the database, exactly as without group
//! commit, and groups form only while the database is busy, which is when they help. With
//! [`GroupCommit::alone_up_to`], a few appends go alone beside a busy slot (PostgreSQL runs a
//! few single-row statements side by side faster than one statement carrying them).
//!
//! Each append keeps its own outcome: the stores commit a group so that an append that
//! conflicts or is refused fails alone and the others commit (see each store's `commit`).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{Error, Result};
use crate::position::{ExpectedVersion, KnownHead};

/// How a store coalesces concurrent appends ([`PostgresStore::with_group_commit`],
/// [`SqliteStore::with_group_commit`]).
///
/// On by default on both stores: an append that finds a free slot goes to the database at
/// once, alone, as without group commit; only appends that would have waited for the database
/// anyway are grouped.
///
/// [`PostgresStore::with_group_commit`]: crate::store::PostgresStore::with_group_commit
/// [`SqliteStore::with_group_commit`]: crate::store::SqliteStore::with_group_commit
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    max_appends: usize,
    in_flight: usize,
    alone_up_to: usize,
    linger: Duration,
    stall: Duration,
}

impl GroupCommit {
    /// Up to 64 appends in a group, `in_flight` groups (or lone appends) at the database at
    /// once, no appends alone beside them ([`GroupCommit::alone_up_to`]), no lingering, 100 ms
    /// before a waiting append gives up on a stalled group.
    #[must_use]
    pub const fn new(in_flight: usize) -> Self {
        Self {
            max_appends: 64,
            in_flight: if in_flight == 0 { 1 } else { in_flight },
            alone_up_to: 0,
            linger: Duration::ZERO,
            stall: Duration::from_millis(100),
        }
    }

    /// How long an append waits for a group before it goes to the database alone, beside the
    /// groups in flight (default 100 ms). An append or group can be held up at the database
    /// (a lock another transaction holds, such as an `append_in` to the same stream left
    /// open); this bounds how long it holds up the appends waiting behind it.
    #[must_use]
    pub const fn stall(mut self, stall: Duration) -> Self {
        self.stall = stall;
        self
    }

    /// At most `max_appends` appends in one group (at least 1).
    #[must_use]
    pub const fn max_appends(mut self, max_appends: usize) -> Self {
        self.max_appends = if max_appends == 0 { 1 } else { max_appends };
        self
    }

    /// At most `in_flight` appends or groups at the database at once (at least 1); an append
    /// that finds them all busy waits for the next group. Fewer means larger groups and fewer
    /// connections; more means less waiting while the database has capacity to spare.
    #[must_use]
    pub const fn in_flight(mut self, in_flight: usize) -> Self {
        self.in_flight = if in_flight == 0 { 1 } else { in_flight };
        self
    }

    /// While fewer than `appends` appends are at the database (alone or in groups), an append
    /// goes there at once, alone, even when every slot ([`GroupCommit::in_flight`]) is taken.
    /// With a few clients, separate statements on separate connections run side by side and
    /// beat one statement carrying them all; grouping pays from a handful of concurrent
    /// appends on. 0 (the default of [`GroupCommit::new`]): only the slots decide.
    #[must_use]
    pub const fn alone_up_to(mut self, appends: usize) -> Self {
        self.alone_up_to = appends;
        self
    }

    /// How long a group that is not full waits for more appends before it goes to the database
    /// (default: not at all). Raises every grouped append's latency by up to this much, for
    /// larger groups. Tokio's timers count in milliseconds: a shorter linger waits about 1 ms.
    /// Without it, the tasks whose appends were just answered still get a turn to join the
    /// next group before it goes.
    #[must_use]
    pub const fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The most appends in one group.
    #[must_use]
    pub const fn max_appends_per_group(&self) -> usize {
        self.max_appends
    }

    /// The most appends or groups at the database at once.
    #[must_use]
    pub const fn max_in_flight(&self) -> usize {
        self.in_flight
    }

    /// Below how many appends at the database an append goes alone beside them.
    #[must_use]
    pub const fn alone_below(&self) -> usize {
        self.alone_up_to
    }

    /// How long a group that is not full waits for more.
    #[must_use]
    pub const fn lingers(&self) -> Duration {
        self.linger
    }

    /// How long an append waits for a group before it goes alone.
    #[must_use]
    pub const fn stalls_after(&self) -> Duration {
        self.stall
    }
}

/// What group commit did so far on a store (and its clones): how many groups went to the
/// database and how large they were (lone appends, which found a free slot, are not counted),
/// and what it is doing now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupCommitStats {
    /// Appends or groups at the database now.
    pub in_flight: usize,
    /// Appends waiting for the next group now.
    pub waiting: usize,
    /// Groups of two appends or more sent to the database.
    pub groups: u64,
    /// Appends sent in those groups.
    pub grouped_appends: u64,
    /// The largest group so far.
    pub largest_group: usize,
    /// Appends that waited longer than [`GroupCommit::stall`] and went alone.
    pub stalled: u64,
}

/// The group commit stopped before it answered an append: the process is shutting down (its
/// runtime dropped the task that held the append) or that task panicked. The append may or
/// may not be stored: retrying it with the same events (the same ids) is safe, and tells.
#[derive(Debug, thiserror::Error)]
#[error(
    "the group commit stopped before answering this append (the runtime is shutting down, or its task panicked); it may or may not be stored: retry it with the same events, which is idempotent"
)]
#[non_exhaustive]
pub struct GroupCommitStopped;

/// An append, as the caller holds it.
pub(crate) struct Request<'a> {
    pub stream_id: &'a str,
    pub aggregate_type: &'a str,
    pub expected: ExpectedVersion,
    /// The stream's head as the caller saw it ([`EventStore::append_after`]), if any.
    ///
    /// [`EventStore::append_after`]: crate::store::EventStore::append_after
    pub head: Option<KnownHead>,
    pub events: Vec<NewEvent>,
}

/// An append waiting in the queue, and where its outcome goes.
pub(crate) struct Queued {
    pub append: Owned,
    pub reply: Reply,
    /// Which append it is, to take it back from the queue.
    ticket: u64,
}

/// An append, owned (it waits in the queue).
pub(crate) struct Owned {
    pub stream_id: String,
    pub aggregate_type: String,
    pub expected: ExpectedVersion,
    pub head: Option<KnownHead>,
    pub events: Vec<NewEvent>,
}

impl Owned {
    /// The append, borrowed; its events move out.
    pub fn request(&mut self) -> Request<'_> {
        Request {
            stream_id: &self.stream_id,
            aggregate_type: &self.aggregate_type,
            expected: self.expected,
            head: self.head,
            events: std::mem::take(&mut self.events),
        }
    }
}

/// Where an append's outcome goes. Dropped unanswered, the caller gets [`GroupCommitStopped`].
pub(crate) struct Reply(oneshot::Sender<Result<Vec<RecordedEvent>>>);

impl Reply {
    /// Answers the append. Its caller may have given up (a cancelled future): the outcome
    /// stands all the same, as for a statement already sent.
    pub fn send(self, outcome: Result<Vec<RecordedEvent>>) {
        let _ = self.0.send(outcome);
    }
}

/// The group commit settings of a store whose `group` field is an `Option<Arc<Group>>`; `$how`
/// says how the store groups appends.
macro_rules! group_commit_methods {
    ($how:literal) => {
        /// This store (sharing its pool) with group commit configured as `config`. Each
        /// grouped append keeps its own outcome: one that conflicts or is refused fails alone.
        ///
        #[doc = $how]
        #[must_use]
        pub fn with_group_commit(mut self, config: $crate::store::GroupCommit) -> Self {
            self.group = Some($crate::store::group::Group::new(config));
            self
        }

        /// This store (sharing its pool) with every append on its own: one transaction per
        /// append, however many tasks append at once.
        #[must_use]
        pub fn without_group_commit(mut self) -> Self {
            self.group = None;
            self
        }

        /// How concurrent appends are grouped (`None`: they are not).
        #[must_use]
        pub fn group_commit(&self) -> Option<$crate::store::GroupCommit> {
            self.group.as_ref().map(|group| group.config())
        }

        /// What group commit did so far on this store and its clones (`None`: it is off).
        #[must_use]
        pub fn group_commit_stats(&self) -> Option<$crate::store::GroupCommitStats> {
            self.group.as_ref().map(|group| group.stats())
        }
    };
}

pub(crate) use group_commit_methods;

/// A store that commits groups of appends.
pub(crate) trait Committer: Clone + Send + Sync + 'static {
    /// Whether two appends to one stream may share a group (they must then be applied in
    /// queue order, the later one seeing the earlier).
    const SAME_STREAM: bool;

    /// Appends on its own, as without group commit (checked already).
    fn alone(
        &self,
        request: Request<'_>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>>> + Send;

    /// Commits `group` (two appends or more), answering every one of them.
    fn commit(&self, group: Vec<Queued>) -> impl Future<Output = ()> + Send;
}

/// The most scheduler turns a slot that committed a group waits for its tasks to come back
/// ([`Group::gather`]).
const GATHER_TURNS: usize = 4;

/// The queue and the slots of one store (shared by its clones).
#[derive(Debug)]
pub(crate) struct Group {
    config: GroupCommit,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Slots taken: lone appends and groups at the database.
    busy: usize,
    /// The appends those slots carry.
    appends: usize,
    queue: VecDeque<Queued>,
    stats: GroupCommitStats,
    tickets: u64,
}

impl State {
    /// Counts a group going to the database.
    fn count(&mut self, appends: usize) {
        if appends > 1 {
            self.stats.groups += 1;
            self.stats.grouped_appends += appends as u64;
            self.stats.largest_group = self.stats.largest_group.max(appends);
        }
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("busy", &self.busy)
            .field("queued", &self.queue.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Group {
    pub fn new(config: GroupCommit) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::default(),
        })
    }

    pub fn config(&self) -> GroupCommit {
        self.config
    }

    pub fn stats(&self) -> GroupCommitStats {
        let state = self.state();
        GroupCommitStats {
            in_flight: state.busy,
            waiting: state.queue.len(),
            ..state.stats
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a counter and a queue, consistent after every statement: a panic
        // elsewhere while it was locked leaves nothing half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `request`: alone when a slot is free, or in the next group.
    pub async fn append<C: Committer>(
        self: &Arc<Self>,
        committer: &C,
        request: Request<'_>,
    ) -> Result<Vec<RecordedEvent>> {
        let (stream_id, aggregate_type) = (request.stream_id, request.aggregate_type);
        let (expected, head) = (request.expected, request.head);
        let waiting = {
            let mut state = self.state();
            if state.busy < self.config.in_flight || state.appends < self.config.alone_up_to {
                state.busy += 1;
                state.appends += 1;
                Err(request)
            } else {
                let (sender, receiver) = oneshot::channel();
                state.tickets += 1;
                let ticket = state.tickets;
                state.queue.push_back(Queued {
                    append: Owned {
                        stream_id: stream_id.to_owned(),
                        aggregate_type: aggregate_type.to_owned(),
                        expected,
                        head,
                        events: request.events,
                    },
                    reply: Reply(sender),
                    ticket,
                });
                Ok((ticket, receiver))
            }
        };
        let (ticket, mut receiver) = match waiting {
            Err(request) => {
                // Handed on when this append is done or dropped.
                let _slot = self.slot(committer, 1);
                return committer.alone(request).await;
            }
            Ok(waiting) => waiting,
        };
        let answer = match tokio::time::timeout(self.config.stall, &mut receiver).await {
            Ok(answer) => answer,
            Err(_) => match self.reclaim(ticket) {
                // Every slot has been busy for the whole wait: go alone, beside them.
                Some(events) => {
                    tracing::debug!(stream_id, "group commit stalled: appending alone");
                    let _slot = self.slot(committer, 1);
                    let request = Request {
                        stream_id,
                        aggregate_type,
                        expected,
                        head,
                        events,
                    };
                    return committer.alone(request).await;
                }
                // Already in a group at the database.
                None => receiver.await,
            },
        };
        answer.unwrap_or_else(|_| Err(Error::Backend(Box::new(GroupCommitStopped))))
    }

    /// A slot taken (counted in `busy`, its `appends` counted in `appends`), freed or handed
    /// on when dropped.
    fn slot<C: Committer>(self: &Arc<Self>, committer: &C, appends: usize) -> Slot<C> {
        Slot {
            group: self.clone(),
            committer: committer.clone(),
            appends,
            running: true,
        }
    }

    /// The runtime is shutting down and a slot has no task to take the waiting appends to the
    /// database: they are answered with [`GroupCommitStopped`] as their replies drop, and the
    /// slot comes free.
    fn stop(&self) {
        let mut state = self.state();
        state.queue.clear();
        state.busy -= 1;
    }

    /// Takes a waiting append back from the queue, with a slot of its own beyond `in_flight`
    /// (`None`: it left the queue for a group).
    fn reclaim(&self, ticket: u64) -> Option<Vec<NewEvent>> {
        let mut state = self.state();
        let at = state.queue.iter().position(|q| q.ticket == ticket)?;
        let queued = state.queue.remove(at)?;
        state.busy += 1;
        state.appends += 1;
        state.stats.stalled += 1;
        Some(queued.append.events)
    }

    /// Holds a slot that just committed a group of `appends` for a few scheduler turns while
    /// the queue grows. The tasks it answered append again at once when the store is busy:
    /// freed at once, the slot would go to the first of them alone, and the rest would wait
    /// for that lone append to make the next group, two round trips where one does. Held, they
    /// all join the next group. A task that does not come back costs one turn; a lone append
    /// (no load) is never held.
    async fn gather(&self, appends: usize) {
        let mut queued = 0;
        for _ in 0..GATHER_TURNS {
            tokio::task::yield_now().await;
            let now = self.state().queue.len();
            if now >= appends || now == queued {
                return;
            }
            queued = now;
        }
    }

    /// Whether appends wait (the caller's slot, done with its `appends`, then passes on to
    /// their group); frees the slot when none do.
    fn keep_or_release(&self, appends: usize) -> bool {
        let mut state = self.state();
        state.appends -= appends;
        if state.queue.is_empty() {
            state.busy -= 1;
            return false;
        }
        true
    }

    /// The waiting appends that go in the next group (possibly none: another slot took them).
    fn next_group<C: Committer>(&self) -> Vec<Queued> {
        let mut group = Vec::new();
        self.take::<C>(&mut self.state(), &mut group);
        group
    }

    /// Moves queued appends into `group`, in queue order, up to the group's size; appends to a
    /// stream already in the group stay queued (in order) unless the store takes them.
    fn take<C: Committer>(&self, state: &mut State, group: &mut Vec<Queued>) {
        let room = self.config.max_appends.saturating_sub(group.len());
        if C::SAME_STREAM {
            let take = room.min(state.queue.len());
            group.extend(state.queue.drain(..take));
            return;
        }
        let mut streams: HashSet<String> =
            group.iter().map(|q| q.append.stream_id.clone()).collect();
        let mut kept = VecDeque::new();
        let mut taken = 0;
        while let Some(queued) = state.queue.pop_front() {
            if taken == room {
                kept.push_back(queued);
                kept.extend(state.queue.drain(..));
                break;
            }
            if streams.insert(queued.append.stream_id.clone()) {
                group.push(queued);
                taken += 1;
            } else {
                kept.push_back(queued);
            }
        }
        state.queue = kept;
    }
}

/// A slot at the database. Dropped, it takes the waiting appends to the database as the next
/// group, or comes free.
struct Slot<C: Committer> {
    group: Arc<Group>,
    committer: C,
    /// The appends it carries (counted in the state's `appends`).
    appends: usize,
    /// False for a slot handed on to a task that has not started yet.
    running: bool,
}

impl<C: Committer> Drop for Slot<C> {
    fn drop(&mut self) {
        if !self.running {
            // Handed on, and dropped before its task ran: the runtime is shutting down (it
            // drops what is spawned then). Handing it on again would only be dropped again.
            self.group.stop();
            return;
        }
        if !self.group.keep_or_release(self.appends) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let mut next = self.group.slot(&self.committer, 0);
                next.running = false;
                runtime.spawn(next.next());
            }
            // No runtime to run a group on (it is shutting down).
            Err(_) => self.group.stop(),
        }
    }
}

impl<C: Committer> Slot<C> {
    /// Commits the next group (after lingering, when asked to), then hands the slot on.
    async fn next(mut self) {
        self.running = true;
        // First let the tasks whose appends were just answered run: they are ready, and those
        // that append again join this group instead of waiting for the one after it.
        tokio::task::yield_now().await;
        let mut group = self.group.next_group::<C>();
        if group.is_empty() {
            return; // handed on, or freed, as the slot drops
        }
        let linger = self.group.config.linger;
        if !linger.is_zero() && group.len() < self.group.config.max_appends {
            tokio::time::sleep(linger).await;
            self.group.take::<C>(&mut self.group.state(), &mut group);
        }
        {
            let mut state = self.group.state();
            state.count(group.len());
            state.appends += group.len();
        }
        self.appends = group.len();
        if group.len() == 1
            && let Some(mut queued) = group.pop()
        {
            let outcome = self.committer.alone(queued.append.request()).await;
            queued.reply.send(outcome);
            return;
        }
        tracing::debug!(appends = group.len(), "group commit");
        let appends = group.len();
        self.committer.commit(group).await;
        self.group.gather(appends).await;
    }
}
