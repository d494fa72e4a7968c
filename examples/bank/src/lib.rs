//! The BankAccount example: a bank account as an event-sourced aggregate.
//!
//! Invariants: an account is opened once; deposits and withdrawals need an open account and a
//! positive amount; a withdrawal never overdraws; only an empty account can be closed, and a
//! closed account takes no more money.

pub mod customers;
pub mod erasure;
pub mod legacy;
pub mod projections;

use factum::{aggregate, event};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Amounts are in cents.
pub type Cents = u64;

/// Whole dollars in cents.
#[must_use]
pub const fn dollars(amount: u64) -> Cents {
    amount * 100
}

/// An account was opened (at most 1 KiB of JSON: an owner's name is short).
#[event(max_size = 1024)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountOpened {
    pub owner: String,
    pub initial_deposit: Cents,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyDeposited {
    pub amount: Cents,
    pub balance_after: Cents,
}

/// Money left the account (version 3; versions 1 and 2 are in [`legacy`]).
#[event(version = 3)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyWithdrawn {
    pub amount: Cents,
    pub balance_after: Cents,
    /// Where the money was handed out.
    pub channel: Channel,
}

/// Where a withdrawal happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// At a branch counter (all withdrawals before version 3 of the event).
    #[default]
    Teller,
    Atm,
    Online,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountClosed {
    pub reason: String,
}

/// Everything that can happen to an account.
#[event]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEvent {
    Opened(AccountOpened),
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
    Closed(AccountClosed),
}

/// Opens an account with a first deposit (which may be zero).
#[derive(Debug, Clone)]
pub struct OpenAccount {
    pub owner: String,
    pub initial_deposit: Cents,
}

#[derive(Debug, Clone)]
pub struct Deposit {
    pub amount: Cents,
}

#[derive(Debug, Clone)]
pub struct Withdraw {
    pub amount: Cents,
    pub channel: Channel,
}

impl Withdraw {
    /// A withdrawal at the teller.
    #[must_use]
    pub fn at_teller(amount: Cents) -> Self {
        Self {
            amount,
            channel: Channel::Teller,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CloseAccount {
    pub reason: String,
}

/// Why a command on an account was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account has not been opened")]
    NotOpen,
    #[error("the account is closed")]
    Closed,
    #[error("amounts must be positive")]
    NonPositiveAmount,
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: Cents, requested: Cents },
    #[error("the account still holds {balance}; withdraw it before closing")]
    NotEmpty { balance: Cents },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[default]
    New,
    Open,
    Closed,
}

/// The state of an account, rebuilt from its events (serializable, for snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankAccount {
    pub owner: String,
    pub balance: Cents,
    pub status: Status,
}

#[aggregate(events = AccountEvent)]
impl BankAccount {
    #[apply]
    fn opened(&mut self, event: &AccountOpened) {
        self.owner.clone_from(&event.owner);
        self.balance = event.initial_deposit;
        self.status = Status::Open;
    }

    #[apply]
    fn deposited(&mut self, event: &MoneyDeposited) {
        self.balance = event.balance_after;
    }

    #[apply]
    fn withdrawn(&mut self, event: &MoneyWithdrawn) {
        self.balance = event.balance_after;
    }

    #[apply]
    fn closed(&mut self, _: &AccountClosed) {
        self.status = Status::Closed;
    }

    #[command]
    fn open(&self, command: &OpenAccount) -> Result<AccountOpened, AccountError> {
        if self.status != Status::New {
            return Err(AccountError::AlreadyOpen);
        }
        Ok(AccountOpened {
            owner: command.owner.clone(),
            initial_deposit: command.initial_deposit,
        })
    }

    #[command]
    fn deposit(&self, command: &Deposit) -> Result<MoneyDeposited, AccountError> {
        self.ensure_open()?;
        let amount = positive(command.amount)?;
        Ok(MoneyDeposited {
            amount,
            balance_after: self.balance + amount,
        })
    }

    #[command]
    fn withdraw(&self, command: &Withdraw) -> Result<MoneyWithdrawn, AccountError> {
        self.ensure_open()?;
        let amount = positive(command.amount)?;
        let Some(balance_after) = self.balance.checked_sub(amount) else {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
                requested: amount,
            });
        };
        Ok(MoneyWithdrawn {
            amount,
            balance_after,
            channel: command.channel,
        })
    }

    #[command]
    fn close(&self, command: &CloseAccount) -> Result<AccountClosed, AccountError> {
        self.ensure_open()?;
        if self.balance > 0 {
            return Err(AccountError::NotEmpty {
                balance: self.balance,
            });
        }
        Ok(AccountClosed {
            reason: command.reason.clone(),
        })
    }

    fn ensure_open(&self) -> Result<(), AccountError> {
        match self.status {
            Status::Open => Ok(()),
            Status::New => Err(AccountError::NotOpen),
            Status::Closed => Err(AccountError::Closed),
        }
    }
}

fn positive(amount: Cents) -> Result<Cents, AccountError> {
    if amount == 0 {
        Err(AccountError::NonPositiveAmount)
    } else {
        Ok(amount)
    }
}
