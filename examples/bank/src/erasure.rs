//! The right to erasure, end to end (`cargo run -p bank --bin erasure`): two customers open
//! accounts and move money; one asks to be forgotten. Afterwards the history reads her name and
//! email as erased, marked shredded, while every account event and balance stays as it was.
//! The log itself is never changed: forgetting deletes the customer's data key.

use std::fmt::Write as _;

use factum::{EventStore, Repository};

use crate::customers::{Customer, Onboard, customer_stream};
use crate::{BankAccount, Deposit, OpenAccount, Withdraw, dollars};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// The customers: id, name, email.
pub const CUSTOMERS: [(&str, &str, &str); 2] = [
    ("ada", "Ada Lovelace", "ada@example.com"),
    ("grace", "Grace Hopper", "grace@example.com"),
];

/// An account's stream.
#[must_use]
pub fn account_stream(customer_id: &str) -> String {
    format!("acc-{customer_id}")
}

/// Runs the story on `store` (which needs a key provider) and returns what it prints.
///
/// # Errors
/// A store error, or a refused command (none is refused in the story).
pub async fn story<S: EventStore + Clone>(store: S) -> Result<String> {
    let customers = Repository::<Customer, _>::new(store.clone());
    let accounts = Repository::<BankAccount, _>::new(store.clone());
    for (id, name, email) in CUSTOMERS {
        customers
            .execute(
                &customer_stream(id),
                Onboard {
                    customer_id: id.to_owned(),
                    name: name.to_owned(),
                    email: email.to_owned(),
                },
            )
            .await?;
        // The account names its owner by customer id: no personal data in it.
        accounts
            .execute(
                &account_stream(id),
                OpenAccount {
                    owner: id.to_owned(),
                    initial_deposit: dollars(100),
                },
            )
            .await?;
    }
    accounts
        .execute(
            &account_stream("ada"),
            Deposit {
                amount: dollars(50),
            },
        )
        .await?;
    accounts
        .execute(&account_stream("grace"), Withdraw::at_teller(dollars(30)))
        .await?;

    let mut out = String::new();
    writeln!(out, "history before Ada asks to be forgotten:")?;
    history(&store, &mut out).await?;
    let forgotten = store.forget("ada").await?;
    writeln!(
        out,
        "\n> forget(\"ada\"): {}",
        if forgotten {
            "her data key is deleted"
        } else {
            "she had no key"
        }
    )?;
    writeln!(out, "\nhistory after:")?;
    history(&store, &mut out).await?;
    Ok(out)
}

/// Every stream of the story, event by event, then the customers and balances as loaded.
async fn history<S: EventStore + Clone>(store: &S, out: &mut String) -> Result<()> {
    for (id, _, _) in CUSTOMERS {
        for stream in [customer_stream(id), account_stream(id)] {
            for envelope in store.read_stream(&stream, ..).await? {
                writeln!(
                    out,
                    "  {}@{} {} {}{}",
                    envelope.stream_id,
                    envelope.stream_version,
                    envelope.event_type,
                    envelope.event,
                    if envelope.shredded {
                        "  (shredded)"
                    } else {
                        ""
                    }
                )?;
            }
        }
    }
    let customers = Repository::<Customer, _>::new(store.clone());
    let accounts = Repository::<BankAccount, _>::new(store.clone());
    for (id, _, _) in CUSTOMERS {
        let customer = customers.load(&customer_stream(id)).await?.state;
        let account = accounts.load(&account_stream(id)).await?.state;
        writeln!(
            out,
            "  {id}: name {:?}, email {:?}, balance {}.{:02}",
            customer.name,
            customer.email.as_deref().unwrap_or("-"),
            account.balance / 100,
            account.balance % 100
        )?;
    }
    Ok(())
}
