//! Crypto-shredding (seed 003, "GDPR & right to erasure"): `#[pii]` fields are stored
//! encrypted under their data subject's key, read back in plain through every read path, and
//! read as their replacements once the subject is forgotten, on every store; the log itself is
//! never changed.

use std::time::Duration;

use factum::pii::{LocalKeyProvider, PiiError};
use factum::projection::{ProjectionRunner, RetryOutcome};
use factum::saga::{CommandBus, ManualClock, SagaContext, SagaRunner};
use factum::store::{FeedQuery, SqlStore as _, StoreKind};
use factum::testing::{TestDatabase, fetch_all};
use factum::{Envelope, Error, EventStore, ExpectedVersion, MemoryStore, NewEvent, Tx};

#[path = "support/customer.rs"]
mod customer;

use customer::CustomerRegistered;

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AddressChanged {
    #[pii(subject)]
    pub customer_id: u64,
    #[pii(replacement = String::new())]
    pub street_address: String,
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRenamed {
    #[pii(subject)]
    pub customer_id: String,
    #[pii(replacement = "[erased]".to_owned())]
    pub name: String,
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerEvent {
    CustomerRegistered(CustomerRegistered),
    AddressChanged(AddressChanged),
    CustomerRenamed(CustomerRenamed),
}

#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Customer {
    pub name: String,
    pub email: Option<String>,
    pub street: String,
}

#[derive(Debug)]
pub struct Register {
    pub id: String,
    pub name: String,
    pub email: String,
}

/// Renames a customer; refused when the name would not change (so a command tells which name
/// its state holds).
#[factum::command]
#[derive(Debug, Clone, PartialEq)]
pub struct Rename {
    pub id: String,
    pub name: String,
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("the customer is named so already")]
pub struct SameName;

#[derive(Debug)]
pub struct Move {
    pub id: u64,
    pub street: String,
}

#[factum::aggregate(events = CustomerEvent)]
impl Customer {
    #[apply]
    fn registered(&mut self, event: &CustomerRegistered) {
        self.name.clone_from(&event.name);
        self.email.clone_from(&event.email);
    }

    #[apply]
    fn renamed(&mut self, event: &CustomerRenamed) {
        self.name.clone_from(&event.name);
    }

    #[command]
    fn rename(&self, command: &Rename) -> Result<CustomerRenamed, SameName> {
        if self.name == command.name {
            return Err(SameName);
        }
        Ok(CustomerRenamed {
            customer_id: command.id.clone(),
            name: command.name.clone(),
        })
    }

    #[apply]
    fn moved(&mut self, event: &AddressChanged) {
        self.street.clone_from(&event.street_address);
    }

    #[command]
    fn register(&self, command: &Register) -> Result<CustomerRegistered, std::convert::Infallible> {
        Ok(CustomerRegistered {
            customer_id: command.id.clone(),
            name: command.name.clone(),
            email: Some(command.email.clone()),
            plan: "pro".to_owned(),
        })
    }

    #[command]
    fn r#move(&self, command: &Move) -> Result<AddressChanged, std::convert::Infallible> {
        Ok(AddressChanged {
            customer_id: command.id,
            street_address: command.street.clone(),
        })
    }
}

/// The key-encryption key of the tests that read with two clients, as two processes would.
const KEK: [u8; 32] = [7; 32];
const ADA: &str = "Ada Lovelace";
const ADA_EMAIL: &str = "ada@example.com";
const ADA_STREET: &str = "12 St James's Square";
const GRACE: &str = "Grace Hopper";
const GRACE_EMAIL: &str = "grace@example.com";

fn register(id: &str, name: &str, email: &str) -> Register {
    Register {
        id: id.to_owned(),
        name: name.to_owned(),
        email: email.to_owned(),
    }
}

/// Another client of the test's database (as another process would have), with a key provider.
async fn keyed<D: TestDatabase>(database: &D, provider: LocalKeyProvider) -> D::Store {
    database
        .another_client()
        .await
        .unwrap()
        .with_key_provider(provider)
}

/// Every payload and every text the events table holds, as stored.
async fn stored_text<D: TestDatabase>(database: &D) -> String {
    let events = database.table("events");
    // PostgreSQL's sealed data, in hex, after each payload.
    let sealed = match D::KIND {
        StoreKind::Postgres => " || ' ' || coalesce(encode(sealed, 'hex'), '')",
        _ => "",
    };
    let rows: Vec<(String,)> = fetch_all(
        &**database,
        &format!(
            "SELECT CAST(payload AS TEXT){sealed} FROM {events} ORDER BY stream_id, stream_version"
        ),
    )
    .await
    .unwrap();
    rows.into_iter().map(|(payload,)| payload).collect()
}

/// The text of every row of every table of the test's database, as the database renders it.
async fn database_text<D: TestDatabase>(database: &D) -> String {
    let tables: Vec<(String,)> = match D::KIND {
        StoreKind::Postgres => {
            let qualified = database.table("t");
            let schema = qualified.trim_end_matches(".t").trim_matches('"');
            fetch_all(
                &**database,
                &format!(
                    "SELECT table_name::text FROM information_schema.tables
                     WHERE table_schema = '{schema}' AND table_type = 'BASE TABLE'"
                ),
            )
            .await
            .unwrap()
        }
        _ => fetch_all(
            &**database,
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .await
        .unwrap(),
    };
    assert!(tables.len() > 10, "{tables:?}");
    let mut text = String::new();
    for (table,) in tables {
        let qualified = database.table(&table);
        let sql = match D::KIND {
            StoreKind::Postgres => format!("SELECT CAST(t AS TEXT) FROM {qualified} t"),
            _ => {
                let columns: Vec<(String,)> = fetch_all(
                    &**database,
                    &format!("SELECT name FROM pragma_table_info('{table}')"),
                )
                .await
                .unwrap();
                let quoted: Vec<String> = columns
                    .iter()
                    .map(|(column,)| format!("coalesce(quote(\"{column}\"), '')"))
                    .collect();
                format!("SELECT {} FROM {qualified}", quoted.join(" || '|' || "))
            }
        };
        let rows: Vec<(String,)> = fetch_all(&**database, &sql).await.unwrap();
        for (row,) in rows {
            text.push_str(&table);
            text.push_str(": ");
            text.push_str(&row);
            text.push('\n');
        }
    }
    text
}

/// Whether `text` (rows as the database renders them) holds `secret`: as text, or as the hex
/// digits in which a byte column's value shows (PostgreSQL's `\x…`, SQLite's `X'…'`).
fn holds(text: &str, secret: &str) -> bool {
    let hex: String = secret.bytes().map(|byte| format!("{byte:02x}")).collect();
    text.contains(secret) || text.to_lowercase().contains(&hex)
}

/// The text of every table, after checking that it holds neither Ada's name nor her email.
async fn holds_nothing_of_ada<D: TestDatabase>(database: &D) -> String {
    let everything = database_text(database).await;
    for secret in [ADA, ADA_EMAIL] {
        assert!(
            !holds(&everything, secret),
            "`{secret}` remains: {everything}"
        );
    }
    everything
}

async fn data_keys<D: TestDatabase>(database: &D) -> i64 {
    let keys = database.table("data_keys");
    let rows: Vec<(i64,)> = fetch_all(&**database, &format!("SELECT COUNT(*) FROM {keys}"))
        .await
        .unwrap();
    rows[0].0
}

/// The customer events of the feed, decoded, and whether each envelope is marked shredded:
/// all of them, once no transaction of another test holds the feed's horizon back.
async fn feed(store: &impl EventStore) -> Vec<(CustomerEvent, bool)> {
    let mut batch = store.read_feed(&FeedQuery::from_start()).await.unwrap();
    for _ in 0..500 {
        if !batch.held_back {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        batch = store.read_feed(&FeedQuery::from_start()).await.unwrap();
    }
    assert!(!batch.held_back, "the feed stays held back");
    batch
        .events
        .into_iter()
        .flat_map(|envelope| {
            let shredded = envelope.shredded;
            envelope
                .decode_events::<CustomerEvent>()
                .unwrap()
                .into_iter()
                .map(move |event| (event, shredded))
        })
        .collect()
}

async fn personal_data_is_sealed_and_forgetting_shreds_it<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let store = keyed(&database, LocalKeyProvider::new(KEK)).await;
    // Snapshots too: an aggregate's state holds the personal data in plain.
    let customers = factum::Repository::<Customer, _>::new(store.clone()).snapshot_every(1);
    customers
        .execute("customer-ada", register("ada", ADA, ADA_EMAIL))
        .await
        .unwrap();
    customers
        .execute(
            "customer-grace",
            register("grace", GRACE, "grace@example.com"),
        )
        .await
        .unwrap();
    customers
        .execute(
            "customer-ada",
            Move {
                id: 1815,
                street: ADA_STREET.to_owned(),
            },
        )
        .await
        .unwrap();

    // Stored sealed: no plaintext of a #[pii] field in the log; the rest as it was.
    let stored = stored_text(&database).await;
    for secret in [ADA, ADA_EMAIL, ADA_STREET, GRACE, "grace@example.com"] {
        assert!(
            !holds(&stored, secret),
            "`{secret}` is stored in plain: {stored}"
        );
    }
    if D::KIND == StoreKind::Postgres {
        // PostgreSQL keeps the sealed data in a column of its own, as bytes, and the erased
        // values in the payload; every sealed event has both.
        let events = database.table("events");
        let counts: Vec<(i64, i64)> = fetch_all(
            &*database,
            &format!(
                "SELECT count(*) FILTER (WHERE sealed IS NOT NULL),
                        count(*) FILTER (WHERE CAST(payload AS TEXT) LIKE '{{\"$pii\":{{%')
                 FROM {events}"
            ),
        )
        .await
        .unwrap();
        assert!(counts[0].0 > 0 && counts[0].0 == counts[0].1, "{counts:?}");
    }
    assert!(stored.contains("\"plan\":\"pro\"") && stored.contains("\"customer_id\":\"ada\""));
    assert!(
        stored.contains("\"customerId\":1815"),
        "renamed subject field: {stored}"
    );
    assert_eq!(
        data_keys(&database).await,
        3,
        "one key per subject (ada, grace, 1815)"
    );

    // Read in plain: aggregate loads (from a new repository: no cache), stream reads, the feed.
    let fresh = factum::Repository::<Customer, _>::new(store.clone());
    let ada = fresh.load("customer-ada").await.unwrap();
    assert_eq!(
        (
            ada.state.name.as_str(),
            ada.state.email.as_deref(),
            ada.state.street.as_str()
        ),
        (ADA, Some(ADA_EMAIL), ADA_STREET)
    );
    let read = store.read_stream("customer-ada", ..).await.unwrap();
    assert!(read.iter().all(|envelope| !envelope.shredded));
    assert!(read[0].event.as_str().contains(ADA_EMAIL));
    assert_eq!(feed(&store).await.len(), 3);

    let everything = database_text(&database).await;
    assert!(
        everything.contains(ADA_EMAIL),
        "her snapshot holds her email: {everything}"
    );

    // Forget Ada (her registration's subject): her fields read as their replacements, marked.
    assert!(store.forget("ada").await.unwrap());
    // Nothing in the database holds her name or email in plain any more: the snapshot of the
    // stream holding data sealed under her key is gone with the key. Grace's is kept.
    let everything = holds_nothing_of_ada(&database).await;
    assert!(everything.contains(GRACE), "Grace's snapshot stays");
    assert!(!store.forget("ada").await.unwrap(), "forgotten already");
    assert_eq!(data_keys(&database).await, 2);
    let ada = fresh.load("customer-ada").await.unwrap();
    assert_eq!(ada.state.name, "[erased]");
    assert_eq!(ada.state.email, None);
    assert_eq!(
        ada.state.street, ADA_STREET,
        "another subject (1815): still readable"
    );
    let events = feed(&store).await;
    let CustomerEvent::CustomerRegistered(registered) = &events[0].0 else {
        panic!("{events:?}");
    };
    assert_eq!(
        (
            registered.customer_id.as_str(),
            registered.name.as_str(),
            &registered.email
        ),
        ("ada", "[erased]", &None)
    );
    assert_eq!(registered.plan, "pro", "what is no personal data stays");
    assert!(events[0].1, "the envelope is marked shredded");
    assert!(!events[1].1 && !events[2].1, "Grace's and 1815's are not");
    let CustomerEvent::CustomerRegistered(grace) = &events[1].0 else {
        panic!("{events:?}");
    };
    assert_eq!(grace.name, GRACE);
    // Another client (another process) with the same key-encryption key reads the same.
    let other = keyed(&database, LocalKeyProvider::new(KEK)).await;
    assert_eq!(feed(&other).await, events);
    // The log is untouched: the same bytes as before.
    assert_eq!(stored_text(&database).await, stored);

    // Ada registers again: a new key, readable, beside her shredded past.
    customers
        .execute("customer-ada-2", register("ada", ADA, ADA_EMAIL))
        .await
        .unwrap();
    let again = fresh.load("customer-ada-2").await.unwrap();
    assert_eq!(again.state.name, ADA);
    assert_eq!(
        fresh.load("customer-ada").await.unwrap().state.name,
        "[erased]"
    );
}

/// A repository's hot cache drops the states it holds when the store forgets a subject: a
/// command after the forget decides on the erased state, not on the plaintext kept in memory.
async fn the_hot_cache_forgets_with_the_store<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let store = keyed(&database, LocalKeyProvider::ephemeral().unwrap()).await;
    let customers = factum::Repository::<Customer, _>::new(store.clone())
        .cache(std::num::NonZeroUsize::new(16).unwrap());
    customers
        .execute("customer-ada", register("ada", ADA, ADA_EMAIL))
        .await
        .unwrap();
    let same = customers
        .execute(
            "customer-ada",
            Rename {
                id: "ada".into(),
                name: ADA.into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(same, factum::ExecuteError::Rejected(SameName)),
        "{same:?}"
    );
    assert_eq!(store.forgets(), 0);
    store.forget("ada").await.unwrap();
    assert_eq!(store.forgets(), 1);
    // The cached state said "Ada Lovelace"; the store now says "[erased]".
    customers
        .execute(
            "customer-ada",
            Rename {
                id: "ada".into(),
                name: ADA.into(),
            },
        )
        .await
        .unwrap();
}

/// Without a key provider an event with personal data is refused with a typed error that says
/// what to do; one without is stored as ever. A reader without the provider sees sealed fields
/// sealed: never plaintext.
async fn without_a_key_provider_personal_data_is_refused<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let customers =
        factum::Repository::<Customer, _>::new(database.another_client().await.unwrap());
    let error = customers
        .execute("customer-ada", register("ada", ADA, ADA_EMAIL))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            &error,
            factum::ExecuteError::Store(Error::Pii(PiiError::NoKeyProvider { .. }))
        ),
        "{error:?}"
    );
    assert!(message.contains("with_key_provider") && message.contains("CustomerRegistered"));
    assert_eq!(stored_text(&database).await, "", "nothing stored");

    let keyed = keyed(&database, LocalKeyProvider::ephemeral().unwrap()).await;
    factum::Repository::<Customer, _>::new(keyed)
        .execute("customer-ada", register("ada", ADA, ADA_EMAIL))
        .await
        .unwrap();
    let unkeyed = database.another_client().await.unwrap();
    let read = unkeyed.read_stream("customer-ada", ..).await.unwrap();
    assert!(read[0].event.as_str().contains("\"$pii\""));
    assert!(!read[0].event.as_str().contains(ADA));
}

/// A key-encryption key other than the one that wrapped the data keys opens nothing: a typed
/// error, not garbage and not a silent replacement.
async fn another_key_encryption_key_opens_nothing<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let store = keyed(&database, LocalKeyProvider::ephemeral().unwrap()).await;
    factum::Repository::<Customer, _>::new(store)
        .execute("customer-ada", register("ada", ADA, ADA_EMAIL))
        .await
        .unwrap();
    let wrong = keyed(&database, LocalKeyProvider::ephemeral().unwrap()).await;
    let error = wrong.read_stream("customer-ada", ..).await.unwrap_err();
    assert!(
        matches!(error, Error::Pii(PiiError::Provider(_))),
        "{error:?}"
    );
}

/// Welcomes a new customer: keeps the name and email in its state, asks for a welcome note (a
/// command carrying the name) and a reminder in a week (a timeout carrying the email), all
/// copies of personal data outside the log.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Welcome {
    pub name: String,
    pub email: Option<String>,
}

#[factum::timeout]
#[derive(Debug, Clone, PartialEq)]
pub struct Remind {
    pub email: Option<String>,
}

const A_WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

#[factum::saga(name = "welcome", commands(Rename))]
impl Welcome {
    #[start(by = customer_id)]
    fn registered(&mut self, event: &CustomerRegistered, context: &mut SagaContext<Self>) {
        self.name.clone_from(&event.name);
        self.email.clone_from(&event.email);
        context.send(
            format!("customer-{}", event.customer_id),
            Rename {
                id: event.customer_id.clone(),
                name: format!("{} (welcomed)", event.name),
            },
        );
        context.schedule(
            A_WEEK,
            Remind {
                email: event.email.clone(),
            },
        );
    }

    #[timeout]
    fn remind(&mut self, _: &Remind, context: &mut SagaContext<Self>) {
        context.complete();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot mail {0}: the mailbox is full")]
pub struct Undeliverable(String);

/// Mails new customers; fails on Ada's mailbox (its error names her address), and keeps who it
/// mailed, as a read model would.
#[derive(Debug, Default)]
pub struct Mailer {
    pub mailed: std::collections::BTreeMap<String, String>,
}

#[factum::projection(name = "mailer")]
impl Mailer {
    #[handle]
    async fn registered(
        &mut self,
        event: &CustomerRegistered,
        _: &Envelope,
        _: &mut Tx<'_>,
    ) -> Result<(), Undeliverable> {
        if let Some(email) = &event.email
            && email == ADA_EMAIL
        {
            return Err(Undeliverable(email.clone()));
        }
        self.mailed
            .insert(event.customer_id.clone(), event.name.clone());
        Ok(())
    }

    #[reset]
    async fn reset(&mut self, _: &mut Tx<'_>) -> Result<(), std::convert::Infallible> {
        self.mailed.clear();
        Ok(())
    }
}

/// Forgetting a subject erases the copies of its personal data that sagas and runners made
/// outside the log, in the same transaction as its key: the state of the saga instances that
/// handled it (which end), their queued commands (never sent) and timeouts (cancelled), and the
/// error texts of its events' dead letters; other subjects' copies stay, and everything keeps
/// working on the redacted events.
async fn forgetting_erases_what_sagas_and_runners_copied<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let store = keyed(&database, LocalKeyProvider::new(KEK)).await;
    let customers = factum::Repository::<Customer, _>::new(store.clone());
    let bus = CommandBus::new().route::<Rename>(&customers);
    let clock = ManualClock::starting_at("2026-11-30T09:00:00Z".parse().unwrap());
    let mut welcome = SagaRunner::<_, Welcome>::new(store.clone(), bus).clock(clock.clone());
    let mut mailer = ProjectionRunner::new(store.clone(), Mailer::default())
        .retries(0, Duration::from_millis(1));
    for (id, name, email) in [("ada", ADA, ADA_EMAIL), ("grace", GRACE, GRACE_EMAIL)] {
        customers
            .execute(&format!("customer-{id}"), register(id, name, email))
            .await
            .unwrap();
    }
    // The saga handles both registrations; its commands and timeouts wait.
    assert_eq!(welcome.handle_events().await.unwrap(), 2);
    mailer.catch_up().await.unwrap();
    let parked = mailer.parked().await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert!(parked[0].error.as_deref().unwrap().contains(ADA_EMAIL));
    let everything = database_text(&database).await;
    for copy in [
        "sagas: ",
        "saga_outbox: ",
        "saga_timeouts: ",
        "projection_dead_letters: ",
    ] {
        assert!(
            everything
                .lines()
                .any(|line| line.starts_with(copy)
                    && (line.contains(ADA) || line.contains(ADA_EMAIL))),
            "a copy of Ada's data in `{copy}` before she is forgotten: {everything}"
        );
    }

    assert!(store.forget("ada").await.unwrap());
    let everything = holds_nothing_of_ada(&database).await;
    assert!(
        everything.contains(GRACE_EMAIL),
        "Grace's copies stay: {everything}"
    );
    let ada = welcome.instance("ada").await.unwrap().unwrap();
    assert!(ada.erased && ada.completed, "{ada:?}");
    assert_eq!(ada.state, Welcome::default());
    let grace = welcome.instance("grace").await.unwrap().unwrap();
    assert!(!grace.erased && !grace.completed);
    assert_eq!(grace.state.email.as_deref(), Some(GRACE_EMAIL));
    let status = welcome.status().await.unwrap();
    assert_eq!(
        (
            status.erased,
            status.active,
            status.pending_commands,
            status.failed_commands,
            status.pending_timeouts
        ),
        (1, 1, 1, 1, 1),
        "Ada's command was never sent, her timeout cancelled: {status:?}"
    );

    // Everything keeps working: Grace's command is delivered and her reminder fires; Ada's
    // stream gets no command.
    welcome.settle().await.unwrap();
    clock.advance(A_WEEK);
    welcome.settle().await.unwrap();
    let grace = welcome.instance("grace").await.unwrap().unwrap();
    assert!(grace.completed && !grace.erased);
    assert_eq!(store.stream_version("customer-ada").await.unwrap(), 1);
    let renamed = fresh_name(&store, "customer-grace").await;
    assert_eq!(renamed, format!("{GRACE} (welcomed)"));
    // The parked registration now reads redacted: retried, it goes through; a rebuild of the
    // read model gives the redacted one.
    let parked = mailer.parked().await.unwrap();
    assert!(
        !parked[0].error.as_deref().unwrap().contains(ADA_EMAIL),
        "{parked:?}"
    );
    assert!(matches!(
        mailer.retry_parked("customer-ada").await.unwrap(),
        RetryOutcome::Drained { .. }
    ));
    mailer.rebuild().await.unwrap();
    let mailed: Vec<(&str, &str)> = mailer
        .projection()
        .mailed
        .iter()
        .map(|(id, name)| (id.as_str(), name.as_str()))
        .collect();
    assert_eq!(mailed, [("ada", "[erased]"), ("grace", GRACE)]);
}

/// The name a customer's stream gives it now, loaded afresh.
async fn fresh_name<S: EventStore + Clone>(store: &S, stream: &str) -> String {
    factum::Repository::<Customer, _>::new(store.clone())
        .load(stream)
        .await
        .unwrap()
        .state
        .name
}

/// A saga that reads an event in plain with a key another process has deleted meanwhile (this
/// process keeps keys for a few seconds) erases what it wrote from it in the same transaction:
/// the data never stays beside the log.
async fn a_saga_reading_with_a_stale_key_erases_its_instance<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let store = keyed(&database, LocalKeyProvider::new(KEK)).await;
    let customers = factum::Repository::<Customer, _>::new(store.clone());
    customers
        .execute("customer-ada", register("ada", ADA, ADA_EMAIL))
        .await
        .unwrap();
    // This process has read her data: her key is in its cache.
    let read = store.read_stream("customer-ada", ..).await.unwrap();
    assert!(read[0].event.as_str().contains(ADA_EMAIL));
    // Another process forgets her.
    let other = keyed(&database, LocalKeyProvider::new(KEK)).await;
    assert!(other.forget("ada").await.unwrap());
    let read = store.read_stream("customer-ada", ..).await.unwrap();
    assert!(
        read[0].event.as_str().contains(ADA_EMAIL),
        "this process still opens it (the test's premise)"
    );

    let bus = CommandBus::new().route::<Rename>(&customers);
    let mut welcome = SagaRunner::<_, Welcome>::new(store.clone(), bus);
    assert_eq!(welcome.handle_events().await.unwrap(), 1);
    let ada = welcome.instance("ada").await.unwrap().unwrap();
    assert!(ada.erased, "{ada:?}");
    holds_nothing_of_ada(&database).await;
    welcome.settle().await.unwrap();
    assert_eq!(store.stream_version("customer-ada").await.unwrap(), 1);
}

/// A subject's key is found through an index, not by reading every subject's: the lookup of a
/// new subject's first event, of a key missing from the cache, and of `forget`, as the stores
/// write it (PostgreSQL: `subject = $1`, row-level security adding the tenant; SQLite:
/// `subject = ?1 AND (?2 IS NULL OR tenant = ?2) ORDER BY tenant`), among 5,000 subjects.
async fn a_subject_s_key_is_found_by_index<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let keys = database.table("data_keys");
    let (fill, plan) = match D::KIND {
        StoreKind::Postgres => (
            format!(
                "INSERT INTO {keys} (key_id, subject, wrapped_key)
                 SELECT gen_random_uuid(), 'subject-' || n, '\\x00'::bytea
                 FROM generate_series(1, 5000) AS n"
            ),
            format!("EXPLAIN SELECT key_id, wrapped_key FROM {keys} WHERE subject = 'subject-7'"),
        ),
        _ => (
            format!(
                "WITH RECURSIVE n(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM n WHERE n < 5000)
                 INSERT INTO {keys} (key_id, subject, wrapped_key)
                 SELECT 'key-' || n, 'subject-' || n, x'00' FROM n"
            ),
            format!(
                "EXPLAIN QUERY PLAN SELECT key_id, wrapped_key FROM {keys}
                 WHERE subject = 'subject-7' AND (NULL IS NULL OR tenant = NULL) ORDER BY tenant"
            ),
        ),
    };
    factum::testing::execute(&*database, &fill).await.unwrap();
    let lines: Vec<String> = match D::KIND {
        StoreKind::Postgres => {
            factum::testing::execute(&*database, &format!("ANALYZE {keys}"))
                .await
                .unwrap();
            let lines: Vec<(String,)> = fetch_all(&*database, &plan).await.unwrap();
            lines.into_iter().map(|(line,)| line).collect()
        }
        _ => {
            let lines: Vec<(i64, i64, i64, String)> = fetch_all(&*database, &plan).await.unwrap();
            lines.into_iter().map(|(.., detail)| detail).collect()
        }
    };
    let plan = lines.join("\n");
    assert!(
        plan.contains("data_keys_subject_idx"),
        "the subject's key is looked up without the index: {plan}"
    );
}

/// A key provider counting the data keys it wraps.
#[derive(Debug)]
struct CountingWraps {
    inner: LocalKeyProvider,
    wraps: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl factum::pii::KeyProvider for CountingWraps {
    fn wrap<'a>(&'a self, key: &'a factum::pii::DataKey) -> factum::pii::KeyFuture<'a, Vec<u8>> {
        self.wraps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.wrap(key)
    }

    fn unwrap<'a>(&'a self, wrapped: &'a [u8]) -> factum::pii::KeyFuture<'a, factum::pii::DataKey> {
        self.inner.unwrap(wrapped)
    }
}

/// Renames the customer `id` (a `#[pii]` name, subject `id`) through `store`.
async fn rename(store: &impl EventStore, id: &str, name: &str) {
    append_rename(
        store,
        &format!("customer-{id}"),
        ExpectedVersion::Any,
        id,
        name,
    )
    .await
    .unwrap();
}

/// Appends the renaming of customer `id` (a `#[pii]` name, subject `id`) to `stream`.
async fn append_rename(
    store: &impl EventStore,
    stream: &str,
    expected: ExpectedVersion,
    id: &str,
    name: &str,
) -> Result<Vec<factum::RecordedEvent>, Error> {
    let renamed = CustomerRenamed {
        customer_id: id.to_owned(),
        name: name.to_owned(),
    };
    store
        .append(
            stream,
            "Customer",
            expected,
            vec![NewEvent::of(&renamed).unwrap()],
        )
        .await
}

/// A process that has no key of a subject at hand gets the subject's key, whether it looks
/// the subject up first (SQLite) or offers a new key straight away (PostgreSQL: one statement
/// for a new subject's first event): an offered key is stored only for a subject that has
/// none, and one not taken is offered to the next new subject, so no more keys are wrapped
/// than are stored.
async fn a_subject_keeps_its_one_key_across_processes<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let wraps = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let process = || async {
        let provider = CountingWraps {
            inner: LocalKeyProvider::new(KEK),
            wraps: wraps.clone(),
        };
        database
            .another_client()
            .await
            .unwrap()
            .with_key_provider(provider)
    };
    let first = process().await;
    rename(&first, "ada", ADA).await;
    let second = process().await;
    rename(&second, "ada", "Ada King").await;
    assert_eq!(data_keys(&database).await, 1, "ada keeps her one key");
    rename(&second, "grace", GRACE).await;
    assert_eq!(data_keys(&database).await, 2);
    assert_eq!(
        wraps.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "a key is wrapped for each key stored, none more"
    );
    let names = |events: Vec<(CustomerEvent, bool)>| {
        events
            .into_iter()
            .map(|(event, shredded)| match event {
                CustomerEvent::CustomerRenamed(renamed) => (renamed.name, shredded),
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    let plain = vec![
        (ADA.to_owned(), false),
        ("Ada King".to_owned(), false),
        (GRACE.to_owned(), false),
    ];
    assert_eq!(names(feed(&first).await), plain);
    assert_eq!(names(feed(&second).await), plain);
    // Forgetting ada deletes the one key both of her events were sealed under.
    assert!(first.forget("ada").await.unwrap());
    let third = process().await;
    assert_eq!(
        names(feed(&third).await),
        [
            ("[erased]".to_owned(), true),
            ("[erased]".to_owned(), true),
            (GRACE.to_owned(), false),
        ]
    );
}

/// Processes appending the first events of the same new subjects at once: each subject ends
/// with one key, under which every one of its events opens, whichever process offered it and
/// whether the key came with an event (PostgreSQL: a key offered in the statement that stores
/// the event sealed under it, stored only when the subject took it) or on its own. A key a
/// subject did not take is offered again to the next new subject rather than thrown away: a
/// process wraps no more keys than it stores, plus the one it keeps.
async fn new_subjects_keep_one_key_when_processes_race<D: TestDatabase>() {
    const SUBJECTS: usize = 24;
    let database = D::create().await.unwrap();
    let wraps = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut processes = Vec::new();
    for _ in 0..3 {
        let provider = CountingWraps {
            inner: LocalKeyProvider::new(KEK),
            wraps: wraps.clone(),
        };
        processes.push(
            database
                .another_client()
                .await
                .unwrap()
                .with_key_provider(provider),
        );
    }
    // The processes at once, each appending for the subjects in turn, in its own streams.
    let appends = processes
        .iter()
        .enumerate()
        .map(|(process, store)| async move {
            for subject in 0..SUBJECTS {
                append_rename(
                    store,
                    &format!("customer-{subject}-{process}"),
                    ExpectedVersion::NoStream,
                    &format!("subject-{subject}"),
                    &format!("name {subject} by {process}"),
                )
                .await
                .unwrap();
            }
        });
    futures_util::future::join_all(appends).await;
    assert_eq!(
        data_keys(&database).await,
        SUBJECTS as i64,
        "one key per subject"
    );
    let wrapped = wraps.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        wrapped <= SUBJECTS + processes.len(),
        "{wrapped} keys wrapped for {SUBJECTS} stored: a key not taken is kept for the next subject"
    );
    // Then appends of two new subjects each, the processes naming them in opposite orders:
    // their keys go in in one order, so no two appends wait on each other.
    let appends = processes
        .iter()
        .enumerate()
        .map(|(process, store)| async move {
            for pair in 0..SUBJECTS / 2 {
                let mut subjects = [format!("pair-{pair}-x"), format!("pair-{pair}-y")];
                if process % 2 == 1 {
                    subjects.reverse();
                }
                let events = subjects
                    .iter()
                    .map(|subject| {
                        NewEvent::of(&CustomerRenamed {
                            customer_id: subject.clone(),
                            name: format!("name {subject} by {process}"),
                        })
                        .unwrap()
                    })
                    .collect();
                store
                    .append(
                        &format!("pair-{pair}-{process}"),
                        "Customer",
                        ExpectedVersion::NoStream,
                        events,
                    )
                    .await
                    .unwrap();
            }
        });
    futures_util::future::join_all(appends).await;
    assert_eq!(data_keys(&database).await, 2 * SUBJECTS as i64);
    let reader = keyed(&database, LocalKeyProvider::new(KEK)).await;
    let mut names: Vec<String> = feed(&reader)
        .await
        .into_iter()
        .map(|(event, shredded)| match event {
            CustomerEvent::CustomerRenamed(renamed) if !shredded => renamed.name,
            other => panic!("{other:?} (shredded: {shredded}) does not open"),
        })
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..processes.len())
        .flat_map(|process| {
            let pairs = (0..SUBJECTS / 2).flat_map(move |pair| {
                ["x", "y"].map(|side| format!("name pair-{pair}-{side} by {process}"))
            });
            (0..SUBJECTS)
                .map(move |subject| format!("name {subject} by {process}"))
                .chain(pairs)
        })
        .collect();
    expected.sort();
    assert_eq!(names, expected);
}

/// PostgreSQL stores a new subject's data key in the statement that stores its first event:
/// one transaction, one commit. An append that stores no event (here a conflict) leaves the
/// subject one key, which its next event is sealed under, and wraps none for nothing.
#[tokio::test]
async fn a_new_subject_s_key_commits_with_its_first_event() {
    let database = factum::testing::postgres::TemporaryStore::create()
        .await
        .unwrap();
    let wraps = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let store = database
        .another_client()
        .await
        .unwrap()
        .with_key_provider(CountingWraps {
            inner: LocalKeyProvider::new(KEK),
            wraps: wraps.clone(),
        });
    // Two new subjects in one append: both keys and both events in one transaction.
    let events = ["ada", "grace"].map(|id| {
        NewEvent::of(&CustomerRenamed {
            customer_id: id.to_owned(),
            name: format!("{id}'s name"),
        })
        .unwrap()
    });
    store
        .append(
            "pair",
            "Customer",
            ExpectedVersion::NoStream,
            events.to_vec(),
        )
        .await
        .unwrap();
    let (keys, log) = (database.table("data_keys"), database.table("events"));
    let transactions: Vec<(String,)> = fetch_all(
        &*database,
        &format!("SELECT xmin::text FROM {keys} UNION SELECT xmin::text FROM {log}"),
    )
    .await
    .unwrap();
    assert_eq!(
        transactions.len(),
        1,
        "keys and events in one transaction: {transactions:?}"
    );
    // Refused appends store no event. One refused by the primary key rolls back whole (the
    // offered key was never stored); one whose head check fails still stores the keys it
    // offered (its WITH clause runs), and says so: either way the subject gets one key, and
    // none is wrapped for nothing.
    for (subject, expected) in [
        ("edsger", ExpectedVersion::NoStream),
        ("barbara", ExpectedVersion::Exact(7)),
    ] {
        let refused = append_rename(
            &store,
            "pair",
            expected,
            subject,
            &format!("{subject} refused"),
        )
        .await;
        assert!(
            matches!(refused, Err(Error::Conflict { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(
        data_keys(&database).await,
        4,
        "the refused appends' subjects have keys"
    );
    rename(&store, "edsger", "Edsger W.").await;
    rename(&store, "barbara", "Barbara L.").await;
    assert_eq!(data_keys(&database).await, 4);
    assert_eq!(
        wraps.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "one key wrapped per subject"
    );
    let reader = keyed(&database, LocalKeyProvider::new(KEK)).await;
    let names: Vec<(String, bool)> = feed(&reader)
        .await
        .into_iter()
        .map(|(event, shredded)| match event {
            CustomerEvent::CustomerRenamed(renamed) => (renamed.name, shredded),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ada's name".to_owned(), false),
            ("grace's name".to_owned(), false),
            ("Edsger W.".to_owned(), false),
            ("Barbara L.".to_owned(), false),
        ]
    );
}

/// A replay of a stream whose events belong to several subjects opens each event under its
/// own subject's key, the key changing from event to event (the replay keeps the last one it
/// used), and reads a forgotten subject's events as erased between the others'; with and
/// without the snapshot read, and with a snapshot present.
async fn a_replay_opens_each_event_under_its_own_subject_s_key<D: TestDatabase>() {
    let database = D::create().await.unwrap();
    let store = keyed(&database, LocalKeyProvider::ephemeral().unwrap()).await;
    let names = [
        ("ada", "Ada A."),
        ("bob", "Bob B."),
        ("bob", "Bob C."),
        ("ada", "Ada D."),
        ("carl", "Carl E."),
        ("bob", "Bob F."),
    ];
    for (id, name) in names {
        append_rename(&store, "shared", ExpectedVersion::Any, id, name)
            .await
            .unwrap();
    }
    assert!(store.forget("bob").await.unwrap());
    let replayed = async |with_snapshot| {
        let mut seen = Vec::new();
        store
            .replay_history("shared", "Customer", with_snapshot, |item| {
                if let factum::store::HistoryItem::Event(event) = item {
                    let renamed: CustomerRenamed = serde_json::from_str(event.payload).unwrap();
                    seen.push((event.stream_version, renamed.name));
                }
                Ok(())
            })
            .await
            .unwrap();
        seen
    };
    let expected: Vec<(u64, String)> = names
        .iter()
        .zip(1..)
        .map(|((id, name), version)| {
            let name = if *id == "bob" { "[erased]" } else { name };
            (version, name.to_owned())
        })
        .collect();
    assert_eq!(replayed(false).await, expected);
    assert_eq!(replayed(true).await, expected);
    // From a snapshot at version 2: the events after it.
    let state = factum::Payload::encode(&serde_json::json!({"name": "Bob B."})).unwrap();
    store
        .save_snapshot(factum::Snapshot::new("shared", "Customer", 2, 1, state))
        .await
        .unwrap();
    assert_eq!(replayed(true).await, expected[2..]);
}

factum::on_both_stores!(
    #[tokio::test]
    a_replay_opens_each_event_under_its_own_subject_s_key,
    #[tokio::test]
    a_subject_s_key_is_found_by_index,
    #[tokio::test]
    new_subjects_keep_one_key_when_processes_race,
    #[tokio::test]
    a_subject_keeps_its_one_key_across_processes,
    #[tokio::test]
    personal_data_is_sealed_and_forgetting_shreds_it,
    #[tokio::test]
    without_a_key_provider_personal_data_is_refused,
    #[tokio::test]
    another_key_encryption_key_opens_nothing,
    #[tokio::test]
    the_hot_cache_forgets_with_the_store,
    #[tokio::test]
    forgetting_erases_what_sagas_and_runners_copied,
    #[tokio::test]
    a_saga_reading_with_a_stale_key_erases_its_instance,
);

/// The in-memory store seals and forgets the same way.
#[tokio::test]
async fn the_memory_store_seals_and_forgets_too() {
    let store = MemoryStore::new().with_key_provider(LocalKeyProvider::ephemeral().unwrap());
    let event = CustomerRegistered {
        customer_id: "ada".to_owned(),
        name: ADA.to_owned(),
        email: None,
        plan: "free".to_owned(),
    };
    let appended = store
        .append(
            "customer-ada",
            "Customer",
            ExpectedVersion::NoStream,
            vec![NewEvent::of(&event).unwrap()],
        )
        .await
        .unwrap();
    assert!(
        appended[0].event.as_str().contains(ADA),
        "the appender gets its events in plain"
    );
    assert_eq!(
        feed(&store).await,
        [(CustomerEvent::CustomerRegistered(event), false)]
    );
    assert!(store.forget("ada").await.unwrap());
    let events = feed(&store).await;
    let CustomerEvent::CustomerRegistered(forgotten) = &events[0].0 else {
        panic!("{events:?}");
    };
    assert_eq!((forgotten.name.as_str(), events[0].1), ("[erased]", true));
    // An empty subject names no one: refused before anything is stored.
    let nobody = CustomerRegistered {
        customer_id: String::new(),
        name: GRACE.to_owned(),
        email: None,
        plan: "free".to_owned(),
    };
    let error = store
        .append(
            "c",
            "Customer",
            ExpectedVersion::Any,
            vec![NewEvent::of(&nobody).unwrap()],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Pii(PiiError::Subject { .. })),
        "{error:?}"
    );
    assert_eq!(store.stream_version("c").await.unwrap(), 0);
}
