//! A counter aggregate for the tests of concurrent commands (`hot_aggregates`, `group_commit`)
//! and of snapshot policies (`snapshot_policies`):
//! each `Add` records the running total it decided on, so a test can tell whether every
//! decision saw every event before it.

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    pub amount: u64,
    pub total: u64,
}

#[factum::event]
#[derive(Debug, Clone, PartialEq)]
pub enum CounterEvent {
    Added(Added),
}

#[derive(Debug)]
pub struct Add {
    pub amount: u64,
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("zero is not an amount")]
pub struct Zero;

#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counter {
    pub total: u64,
}

#[factum::aggregate(events = CounterEvent)]
impl Counter {
    #[apply]
    fn added(&mut self, event: &Added) {
        self.total = event.total;
    }

    #[command]
    fn add(&self, command: &Add) -> Result<Added, Zero> {
        if command.amount == 0 {
            return Err(Zero);
        }
        Ok(Added {
            amount: command.amount,
            total: self.total + command.amount,
        })
    }
}
