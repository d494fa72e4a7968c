//! Trace context (issue 16, part 1; feature `otel`): a command run in a span stores its W3C
//! `traceparent` in its events' metadata, and the projection and the saga that handle those
//! events run their handlers in spans of the same trace, children of the command's span: one
//! trace id links them; a relay publishes the event in a span of that trace and sends the
//! context in the message's `traceparent` header, and another service's consumer handles it
//! in that trace too. Spans go through `tracing-opentelemetry` to an in-memory exporter,
//! installed once with the global subscriber (the runners' tasks run on other threads); each
//! test finds its own spans by its trace id and names of its own.

use std::sync::OnceLock;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use factum::consumer::{Consumer, ConsumerState, JetStreamSource, ProjectionTarget};
use factum::relay::{JetStreamSink, Relay};
use factum::testing::nats::NatsServer;
use factum::testing::postgres::TemporaryStore;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tokio::sync::oneshot;

use factum::projection::ProjectionRunner;
use factum::saga::{CommandBus, SagaRunner};
use factum::store::SqliteStore;
use factum::{Envelope, EventStore as _, Repository, Tx};
use opentelemetry::trace::TracerProvider as _;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub account: String,
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub cents: i64,
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Opened(Opened),
    Deposited(Deposited),
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Account {
    pub cents: i64,
}

#[derive(Debug)]
pub struct Open(pub String);

/// A welcome bonus, sent by the saga.
#[factum::command]
#[derive(Debug, Clone, PartialEq)]
pub struct Credit {
    pub cents: i64,
}

#[factum::aggregate(events = AccountEvent)]
impl Account {
    #[apply]
    fn opened(&mut self, _: &Opened) {}

    #[apply]
    fn deposited(&mut self, event: &Deposited) {
        self.cents += event.cents;
    }

    #[command]
    fn open(&self, command: &Open) -> Result<Opened, std::convert::Infallible> {
        Ok(Opened {
            account: command.0.clone(),
        })
    }

    #[command]
    fn credit(&self, command: &Credit) -> Result<Deposited, std::convert::Infallible> {
        Ok(Deposited {
            cents: command.cents,
        })
    }
}

/// Counts the accounts opened. Its handler reads the whole envelope, whose metadata carries
/// the trace context (a projection reading a lean one, `Source` or `Origin`, is not linked).
#[derive(Debug, Default)]
struct Openings(u64);

#[factum::projection(name = "openings")]
impl Openings {
    #[handle]
    async fn opened(
        &mut self,
        _: &Opened,
        _: &Envelope,
        _: &mut Tx<'_>,
    ) -> Result<(), std::convert::Infallible> {
        self.0 += 1;
        Ok(())
    }
}

#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Welcome {
    pub account: String,
}

#[factum::saga(name = "welcome", commands(Credit))]
impl Welcome {
    #[start(by = account)]
    fn opened(&mut self, event: &Opened, context: &mut factum::saga::SagaContext<Self>) {
        self.account.clone_from(&event.account);
        context.send(event.account.clone(), Credit { cents: 5 });
    }
}

/// The in-memory exporter of every span, and its provider: installed once for the binary with
/// the global subscriber.
fn spans_in_memory() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
    static INSTALLED: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("factum-test")));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        (exporter, provider)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_links_a_command_with_the_projection_and_saga_that_handle_its_events() {
    let (exporter, provider) = spans_in_memory();

    let store = SqliteStore::in_memory().await.unwrap();
    store.migrate().await.unwrap();
    let accounts = Repository::<Account, _>::new(store.clone());
    let opened = accounts
        .execute("acc-1", Open("acc-1".into()))
        .instrument(tracing::info_span!("open account"))
        .await
        .unwrap();
    let traceparent = opened[0].metadata[factum::trace::TRACEPARENT]
        .as_str()
        .expect("the event carries the command's trace context")
        .to_owned();
    // A command outside any span of the application's is traced too: the repository's own span
    // starts a trace of its own.
    let untraced = accounts
        .execute("acc-2", Open("acc-2".into()))
        .await
        .unwrap();
    let other_trace = untraced[0].metadata[factum::trace::TRACEPARENT]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(other_trace[3..35], traceparent[3..35]);

    let mut openings = ProjectionRunner::new(store.clone(), Openings::default());
    openings.catch_up().await.unwrap();
    assert_eq!(openings.projection().0, 2);
    let mut welcome =
        SagaRunner::<_, Welcome>::new(store.clone(), CommandBus::new().route::<Credit>(&accounts));
    welcome.settle().await.unwrap();
    assert_eq!(store.stream_version("acc-1").await.unwrap(), 2);
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let command = spans
        .iter()
        .find(|span| span.name == "open account")
        .expect("the command's span");
    let trace_id = command.span_context.trace_id();
    assert!(traceparent.contains(&trace_id.to_string()), "{traceparent}");
    // The span the events were appended in (the repository's, a child of the command's), as
    // their traceparent names it.
    let appended_in = &traceparent[36..52];
    let appending = spans
        .iter()
        .find(|span| span.span_context.span_id().to_string() == appended_in)
        .expect("the span named by the traceparent");
    assert_eq!(appending.span_context.trace_id(), trace_id);
    assert_eq!(appending.parent_span_id, command.span_context.span_id());
    let handled_in_trace = |name: &str| {
        spans
            .iter()
            .filter(|span| span.name == name && span.span_context.trace_id() == trace_id)
            .map(|span| span.parent_span_id.to_string())
            .collect::<Vec<_>>()
    };
    // Each handler's span is a child of that span, in the command's trace.
    let names: Vec<_> = spans.iter().map(|span| span.name.to_string()).collect();
    assert_eq!(
        handled_in_trace("projection openings handles Opened"),
        [appended_in],
        "{names:?}"
    );
    assert_eq!(
        handled_in_trace("saga welcome handles Opened"),
        [appended_in],
        "{names:?}"
    );
    // The saga's command, delivered later from its outbox, continues the trace: its delivery
    // span is a child of the saga handler's span, and the credit's event carries the trace.
    let saga_handled = spans
        .iter()
        .find(|span| {
            span.name == "saga welcome handles Opened" && span.span_context.trace_id() == trace_id
        })
        .unwrap();
    let sent = spans
        .iter()
        .find(|span| {
            span.name == "saga welcome sends Credit" && span.span_context.trace_id() == trace_id
        })
        .unwrap_or_else(|| panic!("the delivery's span in the command's trace: {names:?}"));
    assert_eq!(sent.parent_span_id, saga_handled.span_context.span_id());
    let credited = store.read_stream("acc-1", 2..=2).await.unwrap();
    let credit_trace = credited[0].metadata[factum::trace::TRACEPARENT]
        .as_str()
        .expect("the credit's event carries the trace");
    assert_eq!(credit_trace[3..35], traceparent[3..35]);
    // The other opening's handlers run in its own trace.
    assert_eq!(
        spans
            .iter()
            .filter(|span| {
                span.name == "projection openings handles Opened"
                    && span.span_context.trace_id().to_string() == other_trace[3..35]
            })
            .count(),
        1
    );
}

/// The command's trace goes on through the relay (its publishing span) and the broker (the
/// message's `traceparent` header) into another service's projection (its handler's span).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_goes_on_through_the_relay_and_the_broker_into_another_service() {
    let (exporter, provider) = spans_in_memory();
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: "TRACED".into(),
            subjects: vec!["factum.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let store = TemporaryStore::new().await.unwrap();
    let accounts = Repository::<Account, _>::new((*store).clone());
    let opened = accounts
        .execute("acc-relayed", Open("acc-relayed".into()))
        .instrument(tracing::info_span!("open a relayed account"))
        .await
        .unwrap();
    let traceparent = opened[0].metadata[factum::trace::TRACEPARENT]
        .as_str()
        .unwrap()
        .to_owned();
    let (trace_id, appended_in) = (&traceparent[3..35], &traceparent[36..52]);

    let sink = JetStreamSink::new(client.clone(), "TRACED", "factum")
        .await
        .unwrap();
    let relay = Relay::new((*store).clone(), "traced", sink);
    let (stop_relay, relay_stopped) = oneshot::channel::<()>();
    let relaying = tokio::spawn(relay.run(async move {
        let _ = relay_stopped.await;
    }));
    let service = SqliteStore::in_memory().await.unwrap();
    service.migrate().await.unwrap();
    let consumer = Consumer::new(
        "openings",
        JetStreamSource::new(client.clone(), "TRACED", "factum.>"),
        ProjectionTarget::new(service.clone(), "openings", Openings::default()),
    );
    let mut state = consumer.state();
    let (stop_consumer, consumer_stopped) = oneshot::channel::<()>();
    let consuming = tokio::spawn(consumer.run(async move {
        let _ = consumer_stopped.await;
    }));
    let applied = tokio::time::timeout(
        Duration::from_secs(60),
        state.wait_for(
            |state| matches!(state, ConsumerState::Running { applied, .. } if *applied >= 1),
        ),
    )
    .await
    .is_ok_and(|reached| reached.is_ok());
    assert!(
        applied,
        "the consumer applied nothing: {:?}",
        *state.borrow()
    );
    stop_relay.send(()).unwrap();
    relaying.await.unwrap().unwrap();
    stop_consumer.send(()).unwrap();
    consuming.await.unwrap().unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let names: Vec<_> = spans.iter().map(|span| span.name.to_string()).collect();
    let in_trace = |name: &str| {
        spans
            .iter()
            .filter(|span| {
                span.name == name && span.span_context.trace_id().to_string() == trace_id
            })
            .map(|span| span.parent_span_id.to_string())
            .collect::<Vec<_>>()
    };
    // Both are children of the span the event was appended in: the message's creation context.
    assert_eq!(
        in_trace("relay traced publishes Opened"),
        [appended_in],
        "{names:?}"
    );
    assert_eq!(
        in_trace("projection openings handles Opened"),
        [appended_in],
        "{names:?}"
    );
}
