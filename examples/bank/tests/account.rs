//! The BankAccount's behaviour, as given past events / when a command / then new events or an
//! error.

use bank::{
    AccountClosed, AccountError, AccountEvent, AccountOpened, BankAccount, Channel, CloseAccount,
    Deposit, MoneyDeposited, MoneyWithdrawn, OpenAccount, Status, Withdraw,
};
use factum::testing::AggregateTest;

type Account = AggregateTest<BankAccount>;

fn opened(initial_deposit: u64) -> AccountOpened {
    AccountOpened {
        owner: "Alice".into(),
        initial_deposit,
    }
}

#[test]
fn opening_a_new_account() {
    let state = Account::given_no_events()
        .when(OpenAccount {
            owner: "Alice".into(),
            initial_deposit: 100,
        })
        .then(opened(100));
    assert_eq!(state.balance, 100);
    assert_eq!(state.status, Status::Open);
}

#[test]
fn an_account_is_opened_once() {
    Account::given(opened(0))
        .when(OpenAccount {
            owner: "Mallory".into(),
            initial_deposit: 5,
        })
        .then_error(AccountError::AlreadyOpen);
}

#[test]
fn deposits_add_to_the_balance() {
    let state = Account::given((
        opened(100),
        MoneyDeposited {
            amount: 50,
            balance_after: 150,
        },
    ))
    .when(Deposit { amount: 25 })
    .then(MoneyDeposited {
        amount: 25,
        balance_after: 175,
    });
    assert_eq!(state.balance, 175);
}

#[test]
fn deposits_must_be_positive() {
    Account::given(opened(100))
        .when(Deposit { amount: 0 })
        .then_error(AccountError::NonPositiveAmount);
}

#[test]
fn no_deposit_before_opening() {
    Account::given_no_events()
        .when(Deposit { amount: 10 })
        .then_error(AccountError::NotOpen);
}

#[test]
fn withdrawals_take_from_the_balance() {
    Account::given(opened(100))
        .when(Withdraw::at_teller(100))
        .then(MoneyWithdrawn {
            amount: 100,
            balance_after: 0,
            channel: Channel::Teller,
        });
}

#[test]
fn no_overdraft() {
    Account::given((
        opened(100),
        MoneyWithdrawn {
            amount: 60,
            balance_after: 40,
            channel: Channel::Teller,
        },
    ))
    .when(Withdraw::at_teller(41))
    .then_error(AccountError::InsufficientFunds {
        balance: 40,
        requested: 41,
    });
}

#[test]
fn only_an_empty_account_closes() {
    Account::given(opened(1))
        .when(CloseAccount {
            reason: "done".into(),
        })
        .then_error(AccountError::NotEmpty { balance: 1 });

    let state = Account::given(opened(0))
        .when(CloseAccount {
            reason: "done".into(),
        })
        .then(AccountClosed {
            reason: "done".into(),
        });
    assert_eq!(state.status, Status::Closed);
}

#[test]
fn no_deposits_to_a_closed_account() {
    Account::given((
        opened(0),
        AccountClosed {
            reason: "done".into(),
        },
    ))
    .when(Deposit { amount: 10 })
    .then_error(AccountError::Closed);
}

#[test]
fn no_withdrawals_from_a_closed_account() {
    Account::given(vec![
        AccountEvent::from(opened(0)),
        AccountEvent::from(AccountClosed {
            reason: "done".into(),
        }),
    ])
    .when(Withdraw::at_teller(1))
    .then_error_matches(|error| matches!(error, AccountError::Closed));
}

#[test]
#[should_panic(expected = "the command produced other events than expected")]
fn the_kit_fails_on_other_events() {
    Account::given(opened(100))
        .when(Deposit { amount: 1 })
        .then(MoneyDeposited {
            amount: 1,
            balance_after: 100,
        });
}

#[test]
#[should_panic(expected = "but the command was rejected")]
fn the_kit_fails_when_events_were_expected_but_the_command_was_rejected() {
    Account::given_no_events()
        .when(Deposit { amount: 1 })
        .then(MoneyDeposited {
            amount: 1,
            balance_after: 1,
        });
}

#[test]
#[should_panic(expected = "the command was rejected with another error")]
fn the_kit_fails_on_another_error() {
    Account::given_no_events()
        .when(Deposit { amount: 1 })
        .then_error(AccountError::Closed);
}

#[test]
#[should_panic(expected = "expected the command to be rejected")]
fn the_kit_fails_when_an_error_was_expected_but_events_came() {
    Account::given(opened(10))
        .when(Withdraw::at_teller(1))
        .then_error(AccountError::InsufficientFunds {
            balance: 10,
            requested: 1,
        });
}
