//! `#[handle(side_effects)]` on either store: a new version of a projection replaying the
//! history runs none of the side effects the older version ran (before issue 11, SQLite's runner
//! ran them all again: this test failed there with 10 sends for 5 events), and a batch delivered
//! again runs none twice. The versions are declared by a `macro_rules!`, as an application
//! declaring several versions of one projection would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use factum::projection::ProjectionRunner;
use factum::testing::TestDatabase;
use factum::{Envelope, EventStore, ExpectedVersion, FeedQuery, NewEvent, Tx};

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
                _: &mut Tx<'_>,
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

factum::on_both_stores!(
    #[tokio::test]
    a_new_version_replaying_the_history_sends_no_farewell_twice,
);
