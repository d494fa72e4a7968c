use factum::saga::SagaContext;
use factum::{event, saga};

#[event]
pub struct OrderPlaced {
    pub order_id: String,
}

#[event]
pub struct OrderShipped {
    pub order_id: String,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Fulfillment {
    step: u32,
}

#[saga(name = "fulfillment", verison = 2)]
impl Fulfillment {
    // No `by`.
    #[start]
    fn placed(&mut self, _event: &OrderPlaced, _context: &mut SagaContext<Self>) {}

    // Async: sagas do no I/O.
    #[handle(by = order_id)]
    async fn shipped(&mut self, _event: &OrderShipped, _context: &mut SagaContext<Self>) {}

    // Returns something.
    #[handle(by = order_id, end, later)]
    fn shipped_again(&mut self, _event: &OrderShipped, _context: &mut SagaContext<Self>) -> u32 {
        self.step
    }

    // Takes the event by value.
    #[timeout]
    fn timed_out(&mut self, _timeout: OrderShipped, _context: &mut SagaContext<Self>) {}
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct NeverStarts;

#[saga]
impl NeverStarts {
    #[handle(by = order_id)]
    fn shipped(&mut self, _event: &OrderShipped, _context: &mut SagaContext<Self>) {}
}

fn main() {}
