//! `projections rebuild`: a projection registered in the tool, its read model and checkpoint
//! cleared, caught up from the start (the work, and its progress bar, are in `projections`).

use super::CliError;
use super::output::print_json;
use super::projections::Registered;
use super::store::AnyStore;

/// Rebuilds `projection` (registered as `name`) and says how many events it handled.
pub(super) async fn rebuild(
    projection: &dyn Registered,
    store: &AnyStore,
    name: &str,
    json: bool,
) -> Result<(), CliError> {
    let handled = projection.rebuild(store).await?;
    if json {
        print_json(&serde_json::json!({ "projection": name, "handled": handled }));
    } else {
        println!("rebuilt `{name}`: {handled} events handled");
    }
    Ok(())
}
