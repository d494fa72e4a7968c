//! A handle on a running runner: its state (answered at once, even during an outage), and its
//! status, parked streams, retry and skip, done by the running runner itself between two
//! batches (so they go through its lease: at no moment do two instances apply events).

use tokio::sync::{mpsc, oneshot, watch};

use super::Projection;
use super::runner::{BoxFuture, ProjectionRunner, Request};
use super::status::{ParkedStream, ProjectionStatus, RetryOutcome, RunnerError, RunnerState};
use crate::store::SqlStore;

/// A handle on a [`ProjectionRunner`], taken before `run` and usable while it runs, from any
/// task: its [`RunnerState`] at once, and its status, parked streams, retry and skip, which
/// the running runner does between two batches.
///
/// ```no_run
/// # async fn run<P: factum::projection::Projection + factum::projection::RunsOn<factum::store::SqliteStore> + Sync>(
/// #     store: factum::store::SqliteStore, projection: P,
/// # ) -> Result<(), factum::projection::RunnerError> {
/// use factum::projection::{ProjectionRunner, RunnerState};
///
/// let runner = ProjectionRunner::new(store, projection);
/// let handle = runner.handle();
/// tokio::spawn(runner.run(std::future::pending()));
/// if let RunnerState::Retrying { error, .. } = handle.state() {
///     eprintln!("the projection is retrying: {error}");
/// }
/// for parked in handle.parked().await? {
///     eprintln!("{} is parked: {:?}", parked.stream_id, parked.error);
/// }
/// # Ok(()) }
/// ```
pub struct RunnerHandle<S, P> {
    state: watch::Receiver<RunnerState>,
    requests: mpsc::UnboundedSender<Request<S, P>>,
}

impl<S, P> Clone for RunnerHandle<S, P> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            requests: self.requests.clone(),
        }
    }
}

impl<S, P: Projection> std::fmt::Debug for RunnerHandle<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerHandle")
            .field("projection", &P::NAME)
            .field("version", &P::VERSION)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl<S: SqlStore, P: Projection> ProjectionRunner<S, P> {
    /// A handle on this runner, to ask it how it is doing and to retry or skip its parked
    /// streams while it runs.
    #[must_use]
    pub fn handle(&self) -> RunnerHandle<S, P> {
        RunnerHandle {
            state: self.control.state.subscribe(),
            requests: self.control.sender.clone(),
        }
    }

    /// Does what handles asked, in order; `leased`: whether this runner holds the lease (work
    /// that applies events is refused otherwise).
    pub(super) async fn serve_requests(&mut self, leased: bool) {
        while let Ok(request) = self.control.requests.try_recv() {
            request(self, leased).await;
        }
    }
}

impl<S: SqlStore, P: Projection> RunnerHandle<S, P> {
    /// What the runner is doing now.
    #[must_use]
    pub fn state(&self) -> RunnerState {
        self.state.borrow().clone()
    }

    /// Waits until the runner's state satisfies `condition`, and returns it.
    ///
    /// # Errors
    /// [`RunnerError::NotRunning`] when the runner is gone.
    pub async fn wait_for(
        &mut self,
        mut condition: impl FnMut(&RunnerState) -> bool,
    ) -> Result<RunnerState, RunnerError> {
        match self.state.wait_for(|state| condition(state)).await {
            Ok(state) => Ok(state.clone()),
            Err(_) => Err(RunnerError::NotRunning {
                projection: P::NAME,
            }),
        }
    }
}

impl<S: SqlStore, P: Projection + Sync> RunnerHandle<S, P> {
    /// Has the running runner do `work` between two batches (`applies`: work that applies
    /// events, done only while the runner holds the lease); its answer.
    async fn ask<T: Send + 'static>(
        &self,
        applies: bool,
        work: impl for<'a> FnOnce(
            &'a mut ProjectionRunner<S, P>,
        ) -> BoxFuture<'a, Result<T, RunnerError>>
        + Send
        + 'static,
    ) -> Result<T, RunnerError> {
        let not_running = || RunnerError::NotRunning {
            projection: P::NAME,
        };
        if matches!(
            *self.state.borrow(),
            RunnerState::NotStarted | RunnerState::Stopped { .. }
        ) {
            return Err(not_running());
        }
        let (answer, answered) = oneshot::channel();
        let request: Request<S, P> = Box::new(move |runner, leased| {
            Box::pin(async move {
                let result = if applies && !leased {
                    Err(RunnerError::Standby {
                        projection: P::NAME,
                    })
                } else {
                    work(runner).await
                };
                let _ = answer.send(result);
            })
        });
        self.requests.send(request).map_err(|_| not_running())?;
        answered.await.map_err(|_| not_running())?
    }

    /// The projection's status, with the runner's state.
    ///
    /// # Errors
    /// [`RunnerError::NotRunning`], or a store error.
    pub async fn status(&self) -> Result<ProjectionStatus, RunnerError> {
        self.ask(false, |runner| {
            Box::pin(async move { Ok(runner.status().await?) })
        })
        .await
    }

    /// The streams parked in the dead-letter queue.
    ///
    /// # Errors
    /// [`RunnerError::NotRunning`], or a store error.
    pub async fn parked(&self) -> Result<Vec<ParkedStream>, RunnerError> {
        self.ask(false, |runner| {
            Box::pin(async move { Ok(runner.parked().await?) })
        })
        .await
    }

    /// Has the runner retry a parked stream (see [`ProjectionRunner::retry_parked`]).
    ///
    /// # Errors
    /// [`RunnerError::NotRunning`], [`RunnerError::Standby`] when another instance holds the
    /// lease (ask that one), or a store error.
    pub async fn retry_parked(&self, stream_id: &str) -> Result<RetryOutcome, RunnerError> {
        let stream_id = stream_id.to_owned();
        self.ask(true, |runner| {
            Box::pin(async move { Ok(runner.retry_parked(&stream_id).await?) })
        })
        .await
    }

    /// Has the runner skip a parked stream's first event (see
    /// [`ProjectionRunner::skip_parked`]).
    ///
    /// # Errors
    /// [`RunnerError::NotRunning`], or a store error.
    pub async fn skip_parked(&self, stream_id: &str) -> Result<Option<u64>, RunnerError> {
        let stream_id = stream_id.to_owned();
        self.ask(false, |runner| {
            Box::pin(async move { Ok(runner.skip_parked(&stream_id).await?) })
        })
        .await
    }
}
