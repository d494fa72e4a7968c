//! `relay nats`, `relay rabbitmq`: the global feed published to NATS JetStream or RabbitMQ until
//! stopped; `relay status`: where a relay stands (see `factum::relay`).

use super::CliError;
use super::args::RelayCommand;
use super::output::{Table, print_json};
use super::store::AnyStore;
use crate::relay::{self, Relay, Sink};
use crate::store::PostgresStore;

/// Runs a relay command.
pub(super) async fn run(
    store: &AnyStore,
    command: &RelayCommand,
    json: bool,
) -> Result<(), CliError> {
    let AnyStore::Postgres(store) = store else {
        return Err(CliError::Usage(
            "relays run on PostgreSQL stores (a SQLite store has no relay yet)".to_owned(),
        ));
    };
    match command {
        #[cfg(feature = "nats")]
        RelayCommand::Nats {
            name,
            url,
            stream,
            prefix,
            aggregate_types,
            event_types,
            batch_size,
        } => {
            let client =
                async_nats::connect(url.as_str())
                    .await
                    .map_err(|error| CliError::Unreachable {
                        url: url.clone(),
                        cause: error.to_string(),
                    })?;
            let sink = relay::JetStreamSink::new(client, stream, prefix)
                .await
                .map_err(|error| CliError::Usage(error.to_string()))?;
            eprintln!(
                "relay `{name}`: publishing to JetStream stream `{stream}` at {url} (Ctrl-C stops)"
            );
            let filter = (aggregate_types.as_slice(), event_types.as_slice());
            publish(store, name, sink, filter, *batch_size).await
        }
        #[cfg(feature = "rabbitmq")]
        RelayCommand::Rabbitmq {
            name,
            url,
            exchange,
            prefix,
            aggregate_types,
            event_types,
            batch_size,
        } => {
            let sink = relay::RabbitMqSink::connect(url, exchange, prefix)
                .await
                .map_err(|error| match error {
                    relay::SinkError::Transient(cause) => CliError::Unreachable {
                        url: url.clone(),
                        cause,
                    },
                    other => CliError::Usage(other.to_string()),
                })?;
            eprintln!(
                "relay `{name}`: publishing to RabbitMQ exchange `{exchange}` at {url} (Ctrl-C stops)"
            );
            let filter = (aggregate_types.as_slice(), event_types.as_slice());
            publish(store, name, sink, filter, *batch_size).await
        }
        RelayCommand::Status { name } => status(store, name, json).await,
        RelayCommand::Retry { name, stream } => {
            let marked = relay::retry(store, name, stream).await?;
            if json {
                print_json(
                    &serde_json::json!({ "relay": name, "stream": stream, "queued": marked }),
                );
            } else if marked == 0 {
                println!("stream `{stream}` is not parked by relay `{name}`: nothing to retry");
            } else {
                println!(
                    "{marked} dead letters of stream `{stream}` queued: relay `{name}` publishes them again within a second of holding its lease"
                );
            }
            Ok(())
        }
        RelayCommand::Skip { name, stream } => {
            let skipped = relay::skip(store, name, stream).await?;
            if json {
                print_json(&serde_json::json!({
                    "relay": name,
                    "stream": stream,
                    "skipped": skipped.as_ref().map(|letter| serde_json::json!({
                        "stream_version": letter.stream_version,
                        "event_id": letter.event_id,
                        "event_type": letter.event_type,
                    })),
                }));
            } else if let Some(letter) = skipped {
                println!(
                    "skipped {}@{} ({}, never published); relay `{name}` publishes the events behind it within a second",
                    letter.stream_id, letter.stream_version, letter.event_type
                );
            } else {
                println!("stream `{stream}` is not parked by relay `{name}`: nothing to skip");
            }
            Ok(())
        }
    }
}

/// Runs a relay to `sink` until Ctrl-C or SIGTERM.
async fn publish<K: Sink>(
    store: &PostgresStore,
    name: &str,
    sink: K,
    (aggregate_types, event_types): (&[String], &[String]),
    batch_size: usize,
) -> Result<(), CliError> {
    let mut relay = Relay::new(store.clone(), name, sink).batch_size(batch_size);
    if !aggregate_types.is_empty() {
        relay = relay.aggregate_types(aggregate_types.iter().cloned());
    }
    if !event_types.is_empty() {
        relay = relay.event_types(event_types.iter().cloned());
    }
    relay.run(stopped()).await?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn status(store: &PostgresStore, name: &str, json: bool) -> Result<(), CliError> {
    let status = relay::status(store, name).await?;
    if json {
        print_json(&serde_json::json!({
            "relay": name,
            "checkpoint": status.checkpoint,
            "published": status.published,
            "behind": status.behind,
            "updated_at": status.updated_at,
            "dead_letters": status.dead_letters.iter().map(|letter| serde_json::json!({
                "stream_id": letter.stream_id,
                "stream_version": letter.stream_version,
                "event_id": letter.event_id,
                "event_type": letter.event_type,
                "feed_position": letter.feed_position,
                "error": letter.error,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!(
        "relay `{name}`: checkpoint {}:{}, {} published, {} events behind, {} dead letters",
        status.checkpoint.tx,
        status.checkpoint.position,
        status.published,
        status.behind,
        status.dead_letters.len()
    );
    if !status.dead_letters.is_empty() {
        let mut table = Table::new(&["stream", "version", "event type", "error"]);
        for letter in &status.dead_letters {
            table.row(vec![
                letter.stream_id.clone(),
                letter.stream_version.to_string(),
                letter.event_type.clone(),
                letter
                    .error
                    .clone()
                    .unwrap_or_else(|| "waits behind its stream's refused event".to_owned()),
            ]);
        }
        print!("{}", table.render());
    }
    Ok(())
}
