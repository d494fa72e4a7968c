//! The command bus: from a command's type name to the aggregate that handles it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use crate::aggregate::Handle;
use crate::command::{Command, CommandContext};
use crate::error::{Error, ExecuteError};
use crate::repository::{Executed, Repository};
use crate::store::EventStore;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What delivering a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dispatched {
    /// The aggregate applied it now, appending this many events.
    Applied {
        /// Events appended.
        events: usize,
    },
    /// It had been applied before (a redelivery): nothing was done.
    AlreadyApplied,
    /// The aggregate refused it.
    Rejected {
        /// The aggregate's error.
        reason: String,
    },
}

/// Why a command could not be delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// No aggregate handles this command type: route it with [`CommandBus::route`].
    #[error(
        "no route for command `{command_type}`: add `.route::<{command_type}>(&repository)` to the command bus"
    )]
    NoRoute {
        /// The command's type name.
        command_type: String,
    },

    /// The stored command does not decode into its Rust type.
    #[error("command `{command_type}` does not decode: {cause}")]
    Decode {
        /// The command's type name.
        command_type: String,
        /// Why.
        #[source]
        cause: serde_json::Error,
    },

    /// The store is unavailable for now (see [`Error::is_transient`]) or the stream kept
    /// changing: delivery is retried later.
    #[error("command `{command_type}` could not be delivered now: {cause}")]
    Unavailable {
        /// The command's type name.
        command_type: String,
        /// Why.
        #[source]
        cause: Error,
    },
}

impl DispatchError {
    /// Whether a later delivery may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

trait Route: Send + Sync {
    fn dispatch<'a>(
        &'a self,
        stream_id: &'a str,
        payload: &'a str,
        context: &'a CommandContext,
    ) -> BoxFuture<'a, Result<Dispatched, DispatchError>>;
}

struct RepositoryRoute<C, A, S> {
    repository: Repository<A, S>,
    command: PhantomData<fn() -> C>,
}

impl<C, A, S> Route for RepositoryRoute<C, A, S>
where
    C: Command,
    A: Handle<C>,
    S: EventStore + 'static,
{
    fn dispatch<'a>(
        &'a self,
        stream_id: &'a str,
        payload: &'a str,
        context: &'a CommandContext,
    ) -> BoxFuture<'a, Result<Dispatched, DispatchError>> {
        Box::pin(async move {
            let command: C =
                serde_json::from_str(payload).map_err(|cause| DispatchError::Decode {
                    command_type: C::NAME.to_owned(),
                    cause,
                })?;
            let unavailable = |cause| DispatchError::Unavailable {
                command_type: C::NAME.to_owned(),
                cause,
            };
            match self
                .repository
                .execute_once(stream_id, command, context)
                .await
            {
                Ok(Executed::Applied(events)) => Ok(Dispatched::Applied {
                    events: events.len(),
                }),
                Ok(Executed::AlreadyApplied { .. }) => Ok(Dispatched::AlreadyApplied),
                Err(ExecuteError::Rejected(error)) => Ok(Dispatched::Rejected {
                    reason: error.to_string(),
                }),
                Err(ExecuteError::Conflict { cause, .. }) => Err(unavailable(cause)),
                Err(ExecuteError::Store(cause)) if waits(&cause) => Err(unavailable(cause)),
                Err(ExecuteError::Store(cause)) => Ok(Dispatched::Rejected {
                    reason: cause.to_string(),
                }),
            }
        })
    }
}

/// Store errors after which the command waits in the outbox: the database is unavailable or
/// the failure may pass, or the store is not set up for this build or was moved to another
/// cluster (an operator's fix, not the command's fault). Any other failure is the command's own (an invalid stream id, a stream
/// of another aggregate type, an inline projection's refusal): retrying cannot help, so it is
/// refused.
fn waits(error: &Error) -> bool {
    error.is_transient()
        || matches!(
            error,
            Error::NotMigrated { .. }
                | Error::IncompatibleSchema { .. }
                | Error::ClusterChanged { .. }
        )
}

/// Routes commands, by type name, to the repositories of the aggregates that handle them.
/// Cloning shares the routes.
///
/// ```no_run
/// # fn doc<A, S, C>(repository: factum::Repository<A, S>)
/// # where A: factum::Handle<C>, S: factum::EventStore + Clone + 'static, C: factum::Command {
/// let bus = factum::saga::CommandBus::new().route::<C>(&repository);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct CommandBus {
    routes: HashMap<&'static str, Arc<dyn Route>>,
}

impl fmt::Debug for CommandBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.routes.keys().collect();
        names.sort_unstable();
        f.debug_struct("CommandBus")
            .field("routes", &names)
            .finish()
    }
}

impl CommandBus {
    /// A bus with no routes.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes command `C` to the aggregate of `repository`: delivered commands are executed
    /// at most once ([`Repository::execute_once`]).
    #[must_use]
    pub fn route<C: Command>(
        mut self,
        repository: &Repository<impl Handle<C>, impl EventStore + Clone + 'static>,
    ) -> Self {
        self.routes.insert(
            C::NAME,
            Arc::new(RepositoryRoute {
                repository: repository.clone(),
                command: PhantomData::<fn() -> C>,
            }),
        );
        self
    }

    /// Whether a command type has a route.
    #[must_use]
    pub fn routes(&self, command_type: &str) -> bool {
        self.routes.contains_key(command_type)
    }

    /// Delivers a stored command (its type name and JSON) to stream `stream_id`.
    ///
    /// # Errors
    /// [`DispatchError`]: no route, a payload that does not decode, or a store that cannot take
    /// it now.
    pub async fn dispatch(
        &self,
        command_type: &str,
        stream_id: &str,
        payload: &str,
        context: &CommandContext,
    ) -> Result<Dispatched, DispatchError> {
        let Some(route) = self.routes.get(command_type) else {
            return Err(DispatchError::NoRoute {
                command_type: command_type.to_owned(),
            });
        };
        route.dispatch(stream_id, payload, context).await
    }
}
