//! `#[handle(side_effects)]` on either store: a new version of a projection replaying the
//! history runs none of the side effects the older version ran (before issue 11, SQLite's runner
//! ran them all again: this test failed there with 10 sends for 5 events), and a batch delivered
//! again runs none twice. The versions are declared by a `macro_rules!`, as an application
//! declaring several versions of one projection would.
//!
//! Side effects run after their batch commits: a mailer taking 30 s delays no reader of other
//! streams (before, its batch held a transaction, and with it the feed's horizon on PostgreSQL
//! and the write lock on SQLite, for those 30 s), and an effect decided before its runner is
//! killed is performed once by the next one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use factum::feed::Subscription;
use factum::projection::ProjectionRunner;
use factum::testing::TestDatabase;
use factum::{Envelope, EventStore, ExpectedVersion, FeedQuery, NewEvent, Tx, Uuid};

#[factum::event]
#[derive(Debug)]
pub struct Closed {
    pub n: u64,
}

macro_rules! mailer {
    ($name:ident, $version:literal) => {
        /// Sends a farewell (counts it) for every closed account: a side effect.
        #[derive(Debug)]
        pub struct $name {
            sent: Arc<AtomicU64>,
        }

        #[factum::projection(name = "farewells", version = $version)]
        impl $name {
            #[handle(side_effects)]
            async fn closed(
                &mut self,
                _: &Closed,
                _: &Envelope,
            ) -> Result<(), std::convert::Infallible> {
                self.sent.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    };
}

mailer!(MailerV1, 1);
mailer!(MailerV2, 2);

async fn a_new_version_replaying_the_history_sends_no_farewell_twice<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    for n in 0..5 {
        database
            .append(
                &format!("acc-{n}"),
                "Account",
                ExpectedVersion::NoStream,
                vec![NewEvent::of(&Closed { n }).unwrap()],
            )
            .await
            .unwrap();
    }
    let sent = Arc::new(AtomicU64::new(0));
    let mut v1 = ProjectionRunner::new(
        (*database).clone(),
        MailerV1 {
            sent: Arc::clone(&sent),
        },
    );
    assert_eq!(v1.catch_up().await.unwrap(), 5);
    assert_eq!(
        sent.load(Ordering::SeqCst),
        5,
        "each farewell sent once by version 1"
    );

    // The same batch delivered again (its checkpoint moved past it): nothing twice.
    let events = database
        .read_feed(&FeedQuery::from_start())
        .await
        .unwrap()
        .events;
    v1.apply_batch(&events, events.last().unwrap().feed_position())
        .await
        .unwrap();
    assert_eq!(
        sent.load(Ordering::SeqCst),
        5,
        "a redelivery sends nothing again"
    );

    let mut v2 = ProjectionRunner::new(
        (*database).clone(),
        MailerV2 {
            sent: Arc::clone(&sent),
        },
    );
    v2.catch_up().await.unwrap();
    assert_eq!(
        sent.load(Ordering::SeqCst),
        5,
        "version 2's replay sends no farewell again"
    );

    // A new event: sent once, by the version that meets it first.
    database
        .append(
            "acc-9",
            "Account",
            ExpectedVersion::NoStream,
            vec![NewEvent::of(&Closed { n: 9 }).unwrap()],
        )
        .await
        .unwrap();
    v2.catch_up().await.unwrap();
    v1.catch_up().await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 6);
}

#[factum::event]
#[derive(Debug)]
pub struct Pinged {
    pub n: u64,
}

/// The receiving side of a mail service, which de-duplicates by idempotency key: how many
/// times each key was delivered to it, and how many calls reached it.
#[derive(Debug, Default)]
struct Inbox {
    delivered: Mutex<HashMap<Uuid, u64>>,
    calls: AtomicU64,
}

/// Sends a farewell per closed account; the first one (stream `slow`) takes `slow` to send.
#[derive(Debug)]
struct SlowMailer {
    slow: Duration,
    started: Arc<AtomicBool>,
    inbox: Arc<Inbox>,
}

#[factum::projection(name = "slow_mailer")]
impl SlowMailer {
    #[handle(side_effects)]
    async fn closed(
        &mut self,
        _: &Closed,
        envelope: &Envelope,
    ) -> Result<(), std::convert::Infallible> {
        if envelope.stream_id == "slow" {
            self.started.store(true, Ordering::SeqCst);
            tokio::time::sleep(self.slow).await;
        }
        self.inbox.calls.fetch_add(1, Ordering::SeqCst);
        *self
            .inbox
            .delivered
            .lock()
            .unwrap()
            .entry(envelope.event_id)
            .or_default() += 1;
        Ok(())
    }
}

/// A reader of other streams: when it saw each ping.
#[derive(Debug)]
struct Watcher {
    seen: Arc<Mutex<HashMap<u64, Instant>>>,
}

#[factum::projection(name = "watcher")]
impl Watcher {
    #[handle]
    async fn pinged(
        &mut self,
        event: &Pinged,
        _: &Envelope,
        _: &mut Tx<'_>,
    ) -> Result<(), std::convert::Infallible> {
        self.seen
            .lock()
            .unwrap()
            .entry(event.n)
            .or_insert_with(Instant::now);
        Ok(())
    }
}

async fn close(database: &impl EventStore, stream: &str) -> Uuid {
    let event = NewEvent::of(&Closed { n: 0 })
        .unwrap()
        .event_id(Uuid::now_v7());
    let id = event.event_id;
    database
        .append(stream, "Account", ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    id
}

async fn a_30_s_side_effect_delays_no_reader_and_happens_once_across_a_kill<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let inbox = Arc::new(Inbox::default());
    let started = Arc::new(AtomicBool::new(false));
    let mailer = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        SlowMailer {
            slow: Duration::from_secs(30),
            started: Arc::clone(&started),
            inbox: Arc::clone(&inbox),
        },
    )
    .poll_interval(Duration::from_millis(20));
    let mailer_task = tokio::spawn(mailer.run(std::future::pending()));
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let watcher = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        Watcher {
            seen: Arc::clone(&seen),
        },
    )
    .poll_interval(Duration::from_millis(20));
    let (stop_watcher, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher_task = tokio::spawn(watcher.run(async {
        let _ = stopped.await;
    }));

    let mut ids = vec![close(&*database, "slow").await];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the slow side effect never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // While the mailer sends for 30 s: pings on other streams, each timed from its append
    // to a live subscription's delivery and to the watcher projection's handler.
    let from = database
        .read_feed(&FeedQuery::from_start())
        .await
        .unwrap()
        .next;
    let mut subscription = Subscription::new(database.another_client().await.unwrap(), from)
        .event_types(["Pinged"])
        .poll_interval(Duration::from_millis(20));
    let mut delays = Vec::new();
    let mut subscription_delays = Vec::new();
    for n in 0..10 {
        let sent = Instant::now();
        database
            .append(
                &format!("other-{n}"),
                "Pinger",
                ExpectedVersion::NoStream,
                vec![NewEvent::of(&Pinged { n }).unwrap()],
            )
            .await
            .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(40), subscription.next())
            .await
            .expect("the subscription is held back")
            .unwrap();
        subscription_delays.push(sent.elapsed());
        assert_eq!(event.stream_id, format!("other-{n}"));
        loop {
            if let Some(at) = seen.lock().unwrap().get(&n) {
                delays.push(at.duration_since(sent));
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(40),
                "ping {n} not seen: the side effect holds the feed back"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let longest = delays.iter().max().copied().unwrap_or_default();
    let subscription_longest = subscription_delays
        .iter()
        .max()
        .copied()
        .unwrap_or_default();
    eprintln!(
        "{}: while a side effect took 30 s, a subscription on other streams got each of 10 pings within {subscription_longest:?}, a projection within {longest:?}",
        std::any::type_name::<D>()
    );
    assert!(
        subscription_longest < Duration::from_secs(1),
        "a slow side effect delays a subscription by {subscription_longest:?}"
    );
    assert!(
        longest < Duration::from_secs(1),
        "a slow side effect delays other readers by {longest:?}"
    );
    assert_eq!(inbox.calls.load(Ordering::SeqCst), 0, "still sending");

    // More farewells are decided, then the mailer's process dies mid-send.
    for stream in ["acc-a", "acc-b"] {
        ids.push(close(&*database, stream).await);
    }
    mailer_task.abort();
    let _ = mailer_task.await;
    stop_watcher.send(()).unwrap();
    watcher_task.await.unwrap().unwrap();

    // The next mailer performs what was decided, once each.
    let mut mailer = ProjectionRunner::new(
        database.another_client().await.unwrap(),
        SlowMailer {
            slow: Duration::ZERO,
            started: Arc::clone(&started),
            inbox: Arc::clone(&inbox),
        },
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while inbox.delivered.lock().unwrap().len() < ids.len() {
        assert!(Instant::now() < deadline, "the farewells were not all sent");
        mailer.catch_up().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mailer.catch_up().await.unwrap();
    let delivered = inbox.delivered.lock().unwrap().clone();
    for id in &ids {
        assert_eq!(delivered.get(id), Some(&1), "{id}: once");
    }
    assert_eq!(delivered.len(), ids.len());
    assert_eq!(
        inbox.calls.load(Ordering::SeqCst),
        ids.len() as u64,
        "no call repeated"
    );
}

factum::on_both_stores!(
    #[tokio::test]
    a_new_version_replaying_the_history_sends_no_farewell_twice,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    a_30_s_side_effect_delays_no_reader_and_happens_once_across_a_kill,
);
