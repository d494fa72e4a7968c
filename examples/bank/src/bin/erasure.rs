//! The right to erasure, end to end, on the embedded SQLite store (see `bank::erasure`).
//!
//! The key-encryption key comes from `FACTUM_KEY_ENCRYPTION_KEY` (32 bytes, base64) when it is
//! set; otherwise the example makes one for the run.

use factum::pii::LocalKeyProvider;
use factum::store::SqliteStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let provider = match std::env::var_os(LocalKeyProvider::ENV) {
        Some(_) => LocalKeyProvider::from_env()?,
        None => {
            println!(
                "(no {} set: a key-encryption key made for this run)\n",
                LocalKeyProvider::ENV
            );
            LocalKeyProvider::ephemeral()?
        }
    };
    let store = SqliteStore::in_memory().await?;
    store.migrate().await?;
    let store = store.with_key_provider(provider);
    print!("{}", bank::erasure::story(store).await?);
    Ok(())
}
