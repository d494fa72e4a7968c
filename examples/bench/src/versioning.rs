//! Reading old versions: 10,000 events stored at version 1 of `MoneyWithdrawn`, read through
//! its two upcasters (v1 → v2 → v3), against 10,000 stored at the current version 3.

use std::time::{Duration, Instant};

use bank::legacy::MoneyWithdrawnV1;
use bank::{AccountEvent, BankAccount, Channel, MoneyWithdrawn};
use factum::{
    CommandContext, EventSet, EventStore, ExpectedVersion, MemoryStore, NewEvent, Payload,
    Repository,
};
use serde::Serialize;

use crate::stats::{median_duration, millis};

#[derive(Debug, Serialize)]
pub struct Report {
    pub events: usize,
    pub rounds: usize,
    /// Decoding alone (`EventSet::decode`), median of the rounds, milliseconds.
    pub decode_native_ms: f64,
    pub decode_upcast_ms: f64,
    /// upcast / native, median of the per-round ratios.
    pub decode_ratio: f64,
    /// The chain alone: the same v1 payloads decoded as `MoneyWithdrawnV1` (no upcasting) vs
    /// through the chain into v3.
    pub decode_v1_only_ms: f64,
    pub chain_ratio: f64,
    /// Loading an aggregate from the in-memory store (read, decode, apply), milliseconds.
    pub load_native_ms: f64,
    pub load_upcast_ms: f64,
    pub load_ratio: f64,
}

pub async fn run(events: usize, rounds: usize) -> Result<Report, Box<dyn std::error::Error>> {
    let v1: Vec<String> = (0..events as u64)
        .map(|i| {
            serde_json::to_string(&MoneyWithdrawnV1 {
                amount: 1,
                balance_after: 1_000_000 - i,
            })
        })
        .collect::<Result<_, _>>()?;
    let v3: Vec<String> = (0..events as u64)
        .map(|i| {
            serde_json::to_string(&MoneyWithdrawn {
                amount: 100,
                balance_after: 100_000_000 - 100 * i,
                channel: Channel::Teller,
            })
        })
        .collect::<Result<_, _>>()?;

    let store = MemoryStore::new();
    for (stream, version, payloads) in [("native", 3, &v3), ("upcast", 1, &v1)] {
        let context = CommandContext::new();
        let opened = AccountEvent::from(bank::AccountOpened {
            owner: stream.into(),
            initial_deposit: 100_000_000,
        });
        let mut batch = vec![NewEvent::from_event(&opened, &context)?];
        for payload in payloads {
            batch.push(NewEvent::new(
                "MoneyWithdrawn",
                version,
                Payload::from_json(payload.clone())?,
            ));
        }
        store
            .append(stream, "BankAccount", ExpectedVersion::NoStream, batch)
            .await?;
    }
    let accounts = Repository::<BankAccount, _>::new(store);

    let (mut decode_native, mut decode_upcast, mut decode_ratios) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut load_native, mut load_upcast, mut load_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut v1_only, mut chain_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so that drift hits both.
        let first_native = round % 2 == 0;
        let (native, upcast) = if first_native {
            let native = decode(&v3, 3)?;
            (native, decode(&v1, 1)?)
        } else {
            let upcast = decode(&v1, 1)?;
            (decode(&v3, 3)?, upcast)
        };
        decode_ratios.push(upcast.as_secs_f64() / native.as_secs_f64());
        let plain = decode_v1(&v1)?;
        chain_ratios.push(upcast.as_secs_f64() / plain.as_secs_f64());
        v1_only.push(plain);
        decode_native.push(native);
        decode_upcast.push(upcast);

        let (native, upcast) = if first_native {
            let native = load(&accounts, "native").await?;
            (native, load(&accounts, "upcast").await?)
        } else {
            let upcast = load(&accounts, "upcast").await?;
            (load(&accounts, "native").await?, upcast)
        };
        load_ratios.push(upcast.as_secs_f64() / native.as_secs_f64());
        load_native.push(native);
        load_upcast.push(upcast);
    }
    Ok(Report {
        events,
        rounds,
        decode_native_ms: millis(median_duration(&decode_native)),
        decode_upcast_ms: millis(median_duration(&decode_upcast)),
        decode_ratio: crate::stats::median(&decode_ratios),
        decode_v1_only_ms: millis(median_duration(&v1_only)),
        chain_ratio: crate::stats::median(&chain_ratios),
        load_native_ms: millis(median_duration(&load_native)),
        load_upcast_ms: millis(median_duration(&load_upcast)),
        load_ratio: crate::stats::median(&load_ratios),
    })
}

fn decode(payloads: &[String], version: u32) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut total = 0_u64;
    for payload in payloads {
        AccountEvent::decode("MoneyWithdrawn", version, payload, &mut |event| {
            if let AccountEvent::Withdrawn(withdrawn) = event {
                total = total.wrapping_add(withdrawn.amount);
            }
        })?;
    }
    let elapsed = started.elapsed();
    std::hint::black_box(total);
    Ok(elapsed)
}

/// Decodes the v1 payloads as v1, with no upcasting.
fn decode_v1(payloads: &[String]) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut total = 0_u64;
    for payload in payloads {
        let event = factum::event::decode_event::<MoneyWithdrawnV1>(1, payload)?;
        total = total.wrapping_add(event.amount);
    }
    let elapsed = started.elapsed();
    std::hint::black_box(total);
    Ok(elapsed)
}

async fn load(
    accounts: &Repository<BankAccount, MemoryStore>,
    id: &str,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let loaded = accounts.load(id).await?;
    let elapsed = started.elapsed();
    std::hint::black_box(loaded.state.balance);
    Ok(elapsed)
}
