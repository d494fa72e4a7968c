//! Runs the BankAccount example on the in-memory store and prints what happens.

use std::error::Error;

use bank::{AccountEvent, BankAccount, CloseAccount, Deposit, OpenAccount, Withdraw, dollars};
use factum::{
    CommandContext, Envelope, EventStore, ExecuteError, FeedQuery, MemoryStore, Repository, Uuid,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let store = MemoryStore::new();
    let accounts = Repository::<BankAccount, _>::new(store.clone());

    println!("Factum bank example (in-memory store)\n");

    let request = CommandContext::new().actor("teller-7");
    let opened = accounts
        .execute_with(
            "acc-alice",
            OpenAccount {
                owner: "Alice".into(),
                initial_deposit: dollars(100),
            },
            &request,
        )
        .await?;
    print_events("open account for Alice with 100.00", &opened);

    let deposited = accounts
        .execute(
            "acc-alice",
            Deposit {
                amount: dollars(50),
            },
        )
        .await?;
    print_events("deposit 50.00", &deposited);

    let withdrawn = accounts
        .execute("acc-alice", Withdraw::at_teller(dollars(30)))
        .await?;
    print_events("withdraw 30.00", &withdrawn);

    report(
        "withdraw 500.00 (more than the balance)",
        accounts
            .execute("acc-alice", Withdraw::at_teller(dollars(500)))
            .await,
    );
    report(
        "close while money is left",
        accounts
            .execute(
                "acc-alice",
                CloseAccount {
                    reason: "moving abroad".into(),
                },
            )
            .await,
    );

    // A transfer is two commands on two aggregates; one correlation id ties them together.
    accounts
        .execute(
            "acc-bob",
            OpenAccount {
                owner: "Bob".into(),
                initial_deposit: 0,
            },
        )
        .await?;
    let transfer = Uuid::now_v7();
    let debit = accounts
        .execute_with(
            "acc-alice",
            Withdraw::at_teller(dollars(20)),
            &CommandContext::new().correlation_id(transfer),
        )
        .await?;
    let credit = accounts
        .execute_with(
            "acc-bob",
            Deposit {
                amount: dollars(20),
            },
            &CommandContext::new().correlation_id(transfer),
        )
        .await?;
    print_events(
        "transfer 20.00 from Alice to Bob (one correlation id)",
        &[debit, credit].concat(),
    );

    // Ten deposits race on Bob's account: each conflicting append reloads and retries.
    let racing = (1..=10).map(|i| {
        let accounts = accounts.clone().max_retries(50);
        tokio::spawn(async move {
            accounts
                .execute(
                    "acc-bob",
                    Deposit {
                        amount: i * dollars(1),
                    },
                )
                .await
        })
    });
    for task in racing {
        task.await??;
    }
    let bob = accounts.load("acc-bob").await?;
    println!(
        "> 10 concurrent deposits to Bob: all committed, balance {} at version {}",
        bob.state.balance, bob.version
    );

    let emptied = accounts
        .execute("acc-alice", Withdraw::at_teller(dollars(100)))
        .await?;
    print_events("withdraw the remaining 100.00", &emptied);
    let closed = accounts
        .execute(
            "acc-alice",
            CloseAccount {
                reason: "moving abroad".into(),
            },
        )
        .await?;
    print_events("close the account", &closed);
    report(
        "deposit 10.00 to the closed account",
        accounts
            .execute(
                "acc-alice",
                Deposit {
                    amount: dollars(10),
                },
            )
            .await,
    );
    report(
        "deposit to an account never opened",
        accounts
            .execute(
                "acc-carol",
                Deposit {
                    amount: dollars(10),
                },
            )
            .await,
    );

    let alice = accounts.load("acc-alice").await?;
    println!(
        "\nstate of acc-alice rebuilt from {} events: {:?}",
        alice.version, alice.state
    );

    println!("\nglobal feed:");
    let feed = store.read_feed(&FeedQuery::from_start()).await?;
    for envelope in &feed.events {
        println!(
            "  #{} {}@{} {} {} (correlation {}, causation {}, actor {})",
            envelope.global_position,
            envelope.stream_id,
            envelope.stream_version,
            envelope.event_type,
            envelope.event,
            short(envelope.correlation_id),
            short(envelope.causation_id),
            envelope.actor.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

fn print_events(what: &str, events: &[Envelope<AccountEvent>]) {
    println!("> {what}");
    for envelope in events {
        println!(
            "  stored {}@{} at position {}: {:?}",
            envelope.stream_id, envelope.stream_version, envelope.global_position, envelope.event
        );
    }
}

fn report<T, E: Error>(what: &str, result: Result<T, ExecuteError<E>>) {
    println!("> {what}");
    match result {
        Ok(_) => println!("  accepted"),
        Err(ExecuteError::Rejected(reason)) => println!("  rejected: {reason}"),
        Err(other) => println!("  failed: {other}"),
    }
}

fn short(id: Uuid) -> String {
    id.simple().to_string()[24..].to_owned()
}
