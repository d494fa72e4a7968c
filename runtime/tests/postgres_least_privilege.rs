//! Least privilege on PostgreSQL (issue 15, part 3): an owner role migrates a schema and runs
//! `PostgresStore::application_grants`; the application connects as a role that owns nothing.
//! The conformance suite and a projection runner pass as that role, its `migrate()` at start
//! succeeds without DDL, and it cannot update, delete or truncate events, nor disable the
//! append-only trigger. Each case makes its own schema and two roles, and drops them.

use std::error::Error;
use std::time::Duration;

use factum::projection::ProjectionRunner;
use factum::store::PostgresStore;
use factum::testing::postgres::LeastPrivilege;
use factum::{Envelope, EventStore, ExpectedVersion, NewEvent, Tx};

/// The cases' schemas and roles, kept until their teardown (a failed case's are dropped by the
/// next run's sweep).
static CASES: std::sync::Mutex<Vec<LeastPrivilege>> = std::sync::Mutex::new(Vec::new());

/// The store as an application role sees it, its migrate() at start finding the schema up to
/// date (it needs no DDL).
async fn application_store() -> PostgresStore {
    let case = LeastPrivilege::new().await.expect("roles and a schema");
    let store = case.application().clone();
    store
        .migrate()
        .await
        .expect("the application's migrate() finds the schema up to date, needing no DDL");
    CASES.lock().unwrap_or_else(|e| e.into_inner()).push(case);
    store
}

async fn drop_application_store(store: PostgresStore) {
    let mut cases = CASES.lock().unwrap_or_else(|e| e.into_inner());
    cases.retain(|case| case.application().schema() != store.schema());
}

factum::conformance_tests!(setup = application_store, teardown = drop_application_store);

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub cents: i64,
}

/// A read model the owner created and granted to the application.
#[derive(Debug)]
struct Balances {
    table: String,
}

#[factum::projection(name = "balances")]
impl Balances {
    #[handle]
    async fn deposited(
        &mut self,
        event: &Deposited,
        envelope: &Envelope,
        tx: &mut Tx<'_>,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} AS b (account, cents) VALUES ($1, $2)
             ON CONFLICT (account) DO UPDATE SET cents = b.cents + excluded.cents",
            self.table
        )))
        .bind(envelope.stream_id.as_str())
        .bind(event.cents)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_appends_and_projects_but_cannot_change_the_log() {
    let roles = LeastPrivilege::new().await.expect("roles and a schema");
    let store = roles.application().clone();
    let schema = store.schema().to_owned();
    let table = format!("{schema}.balances");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (account text PRIMARY KEY, cents bigint NOT NULL);
         GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {};",
        roles.application_role()
    )))
    .execute(roles.owner().pool())
    .await
    .expect("the owner creates the read model");

    for n in 1..=10 {
        store
            .append(
                &format!("account-{}", n % 3),
                "Account",
                ExpectedVersion::Any,
                vec![NewEvent::of(&Deposited { cents: n }).expect("encodes")],
            )
            .await
            .expect("the application appends");
    }
    let mut runner = ProjectionRunner::new(
        store.clone(),
        Balances {
            table: table.clone(),
        },
    );
    tokio::time::timeout(Duration::from_secs(30), runner.catch_up())
        .await
        .expect("caught up in time")
        .expect("the projection runs as the application role");
    let app = store.pool();
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT sum(cents)::bigint FROM {table}"
    )))
    .fetch_one(app)
    .await
    .expect("the read model");
    assert_eq!(total, 55);

    // What the application role cannot do to the log.
    for statement in [
        format!("UPDATE {schema}.events SET event_type = 'Forged'"),
        format!("DELETE FROM {schema}.events"),
        format!("TRUNCATE {schema}.events"),
        format!("ALTER TABLE {schema}.events DISABLE TRIGGER events_append_only_rows"),
        format!("DROP TABLE {schema}.events"),
        format!("CREATE TABLE {schema}.intruder (id int)"),
    ] {
        let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
            .execute(app)
            .await
            .expect_err(&statement);
        let code = refused
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        // 42501: insufficient privilege (also "must be owner of table").
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {refused}");
    }
    let events: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.events"
    )))
    .fetch_one(app)
    .await
    .expect("the log reads");
    assert_eq!(events, 10, "the log is intact");
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    #[pii(subject)]
    pub id: String,
    #[pii]
    pub email: Option<String>,
}

/// A saga keeping a customer's email in its state: a copy of personal data outside the log.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Greeter {
    pub email: Option<String>,
}

#[factum::saga(name = "greeter")]
impl Greeter {
    #[start(by = id)]
    fn registered(&mut self, event: &Registered, _: &mut factum::saga::SagaContext<Self>) {
        self.email.clone_from(&event.email);
    }
}

/// Personal data as the application role: it seals an event (making the subject's key), a saga
/// records that it handled the data (locking the key `FOR SHARE`, which needs the column grant
/// on `data_keys`), and forgetting deletes the key and erases the saga's copy.
#[tokio::test]
async fn the_application_role_seals_and_forgets_personal_data() {
    let roles = LeastPrivilege::new().await.expect("roles and a schema");
    let store = roles
        .application()
        .clone()
        .with_key_provider(factum::pii::LocalKeyProvider::ephemeral().expect("a key"));
    store
        .append(
            "customer-ada",
            "Customer",
            ExpectedVersion::NoStream,
            vec![
                NewEvent::of(&Registered {
                    id: "ada".to_owned(),
                    email: Some("ada@example.com".to_owned()),
                })
                .expect("encodes"),
            ],
        )
        .await
        .expect("the application seals and appends");
    let mut greeter =
        factum::saga::SagaRunner::<_, Greeter>::new(store.clone(), factum::saga::CommandBus::new());
    assert_eq!(
        greeter
            .handle_events()
            .await
            .expect("the saga records the key as the application role"),
        1
    );
    let ada = greeter
        .instance("ada")
        .await
        .expect("reads")
        .expect("an instance");
    assert_eq!(ada.state.email.as_deref(), Some("ada@example.com"));
    assert!(store.forget("ada").await.expect("the application forgets"));
    let ada = greeter
        .instance("ada")
        .await
        .expect("reads")
        .expect("an instance");
    assert!(ada.erased && ada.state.email.is_none(), "{ada:?}");
}
