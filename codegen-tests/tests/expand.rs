//! Snapshots of what the macros generate, rendered with prettyplease, so that a reviewer sees
//! every change to the generated code. Update with `cargo insta review` (or
//! `INSTA_UPDATE=always`) after an intended change.

use proc_macro2::TokenStream;
use quote::quote;

fn render(tokens: TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens).expect("the expansion is a list of items");
    prettyplease::unparse(&file)
}

fn event(args: TokenStream, input: TokenStream) -> String {
    render(factum_codegen::event(args, input))
}

fn aggregate(args: TokenStream, input: TokenStream) -> String {
    render(factum_codegen::aggregate(args, input))
}

#[test]
fn event_struct_with_defaults() {
    insta::assert_snapshot!(event(
        quote!(),
        quote! {
            #[derive(Debug, Clone, PartialEq)]
            pub struct AccountOpened {
                pub owner: String,
                pub initial_deposit: u64,
            }
        }
    ));
}

#[test]
fn event_struct_with_name_and_version() {
    insta::assert_snapshot!(event(
        quote!(name = "bank.MoneyWithdrawn", version = 2),
        quote! {
            /// Money left the account.
            #[derive(Debug)]
            #[serde(rename_all = "camelCase")]
            pub struct MoneyWithdrawn {
                pub amount: u64,
                pub balance_after: u64,
            }
        }
    ));
}

#[test]
fn event_struct_with_personal_data() {
    insta::assert_snapshot!(event(
        quote!(),
        quote! {
            #[serde(rename_all = "camelCase")]
            pub struct CustomerRegistered {
                #[pii(subject)]
                pub customer_id: String,
                #[pii(replacement = "[erased]".to_owned())]
                pub full_name: String,
                #[pii]
                pub email: Option<String>,
                pub plan: String,
            }
        }
    ));
}

#[test]
fn event_set() {
    insta::assert_snapshot!(event(
        quote!(),
        quote! {
            #[derive(Debug, Clone, PartialEq)]
            pub enum AccountEvent {
                Opened(AccountOpened),
                Withdrawn(MoneyWithdrawn),
            }
        }
    ));
}

#[test]
fn aggregate_impl() {
    insta::assert_snapshot!(aggregate(
        quote!(events = AccountEvent, ignore(AccountAudited)),
        quote! {
            impl BankAccount {
                #[apply]
                fn opened(&mut self, event: &AccountOpened) {
                    self.balance = event.initial_deposit;
                }

                #[apply]
                fn withdrawn(&mut self, event: &MoneyWithdrawn) {
                    self.balance = event.balance_after;
                }

                #[command]
                fn withdraw(&self, command: &Withdraw) -> Result<MoneyWithdrawn, AccountError> {
                    self.check(command.amount)?;
                    Ok(MoneyWithdrawn { amount: command.amount, balance_after: self.balance - command.amount })
                }

                fn check(&self, amount: u64) -> Result<(), AccountError> {
                    if amount > self.balance { Err(AccountError::InsufficientFunds) } else { Ok(()) }
                }
            }
        }
    ));
}

#[test]
fn event_with_a_mistake_still_emits_the_event() {
    // The error is reported, and the event is still expanded (with its defaults) so that its
    // uses do not fail too.
    insta::assert_snapshot!(event(
        quote!(nmae = "X"),
        quote! {
            pub struct Pinged;
        }
    ));
}

#[test]
fn aggregate_with_a_mistake_emits_stubs() {
    insta::assert_snapshot!(aggregate(
        quote!(events = CounterEvent),
        quote! {
            impl Counter {
                #[apply]
                fn incremented(&self, event: &Incremented) {}

                #[command]
                fn increment(&self, command: &Increment) -> Result<Incremented, TooBig> {
                    Ok(Incremented { by: command.by })
                }
            }
        }
    ));
}

fn upcast(args: TokenStream, input: TokenStream) -> String {
    render(factum_codegen::upcast(args, input))
}

#[test]
fn upcaster() {
    insta::assert_snapshot!(upcast(
        quote!(),
        quote! {
            fn dollars_to_cents(old: MoneyWithdrawnV1) -> Option<MoneyWithdrawnV2> {
                Some(MoneyWithdrawnV2 { cents: old.dollars * 100 })
            }
        }
    ));
}

#[test]
fn projection() {
    insta::assert_snapshot!(render(factum_codegen::projection(
        quote!(name = "balances", version = 2),
        quote! {
            impl Balances {
                #[handle]
                async fn deposited(&mut self, event: &MoneyDeposited, envelope: &Envelope, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
                    Ok(())
                }
            }
        }
    )));
}

/// Handlers taking only the events' origins: the runner reads only those columns.
#[test]
fn projection_of_origins() {
    insta::assert_snapshot!(render(factum_codegen::projection(
        quote!(name = "balances"),
        quote! {
            impl Balances {
                #[handle]
                async fn deposited(&mut self, event: &MoneyDeposited, origin: &Origin<'_>, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
                    Ok(())
                }

                #[handle(side_effects)]
                async fn withdrawn(&mut self, event: &MoneyWithdrawn, origin: &factum::Origin<'_>) -> Result<(), Error> {
                    Ok(())
                }
            }
        }
    )));
}

/// Handlers taking only the events' sources, and one taking its origin: the runner reads the
/// origin's columns, the most a handler takes.
#[test]
fn projection_of_sources() {
    insta::assert_snapshot!(render(factum_codegen::projection(
        quote!(name = "balances"),
        quote! {
            impl Balances {
                #[handle]
                async fn opened(&mut self, event: &AccountOpened, source: &Source<'_>, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
                    Ok(())
                }

                #[handle]
                async fn deposited(&mut self, event: &MoneyDeposited, source: &factum::Source<'_>, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
                    Ok(())
                }
            }
        }
    )));
    insta::assert_snapshot!(render(factum_codegen::projection(
        quote!(name = "balances"),
        quote! {
            impl Balances {
                #[handle]
                async fn opened(&mut self, event: &AccountOpened, source: &Source<'_>, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
                    Ok(())
                }

                #[handle]
                async fn deposited(&mut self, event: &MoneyDeposited, origin: &Origin<'_>, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
                    Ok(())
                }
            }
        }
    )));
}

#[test]
fn inline_projection() {
    insta::assert_snapshot!(render(factum_codegen::projection(
        quote!(name = "balances", inline),
        quote! {
            impl Balances {
                #[handle]
                async fn deposited(&mut self, event: &MoneyDeposited, envelope: &Envelope, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
                    Ok(())
                }
            }
        }
    )));
}

#[test]
fn projection_with_flush() {
    insta::assert_snapshot!(render(factum_codegen::projection(
        quote!(name = "balances"),
        quote! {
            impl Balances {
                #[handle]
                async fn deposited(&mut self, event: &MoneyDeposited, envelope: &Envelope, _tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
                    self.pending.push(event.cents);
                    Ok(())
                }

                #[handle(side_effects)]
                async fn withdrawn(&mut self, event: &MoneyWithdrawn, envelope: &Envelope) -> Result<(), MailError> {
                    self.mailer.send(envelope.event_id, event).await
                }

                #[flush]
                async fn flush(&mut self, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
                    write(tx, &self.pending).await
                }

                #[discard]
                fn discard(&mut self) {
                    self.pending.clear();
                }

                #[reset]
                async fn reset(&mut self, tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
                    clear(tx).await
                }
            }
        }
    )));
}

#[test]
fn saga() {
    insta::assert_snapshot!(render(factum_codegen::saga(
        quote!(
            name = "order_fulfillment",
            commands(ReserveInventory, CancelOrder)
        ),
        quote! {
            impl OrderFulfillment {
                #[start(by = order_id)]
                fn placed(&mut self, event: &OrderPlaced, context: &mut SagaContext<Self>) {}

                #[handle(by = order_id, end)]
                fn cancelled(&mut self, event: &OrderCancelled, context: &mut SagaContext<Self>) {}

                #[timeout]
                fn timed_out(&mut self, timeout: &PaymentTimedOut, context: &mut SagaContext<Self>) {}

                #[rejected]
                fn rejected(&mut self, rejection: &Rejection, context: &mut SagaContext<Self>) {}
            }
        }
    )));
}

#[test]
fn projection_with_a_mistake_emits_a_stub() {
    // The handler that is not async is reported; the stub implements `Projection` (and
    // `InlineProjection`) with the connection of the handler that is right, and handles nothing.
    insta::assert_snapshot!(render(factum_codegen::projection(
        quote!(name = "balances", inline),
        quote! {
            impl Balances {
                #[handle]
                async fn deposited(&mut self, event: &MoneyDeposited, envelope: &Envelope, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
                    Ok(())
                }

                #[handle]
                fn withdrawn(&mut self, event: &MoneyWithdrawn, envelope: &Envelope, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
                    Ok(())
                }
            }
        }
    )));
}

#[test]
fn saga_with_a_mistake_emits_stubs() {
    // The command listed twice is reported; the stub implements `Saga`, `Sends` once per command
    // and `Schedules` for the timeout handler that is right, and handles nothing.
    insta::assert_snapshot!(render(factum_codegen::saga(
        quote!(
            name = "order_fulfillment",
            commands(ReserveInventory, CancelOrder, ReserveInventory)
        ),
        quote! {
            impl OrderFulfillment {
                #[start(by = order_id)]
                fn placed(&mut self, event: &OrderPlaced, context: &mut SagaContext<Self>) {}

                #[timeout]
                fn timed_out(&mut self, timeout: &PaymentTimedOut, context: &mut SagaContext<Self>) {}

                #[timeout]
                async fn late(&mut self, timeout: &ShipmentLate, context: &mut SagaContext<Self>) {}
            }
        }
    )));
}

#[test]
fn command_message() {
    insta::assert_snapshot!(render(factum_codegen::command(
        quote!(name = "ReserveStock"),
        quote! {
            #[derive(Debug)]
            pub struct ReserveInventory {
                pub order_id: String,
            }
        }
    )));
}
