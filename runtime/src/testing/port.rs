//! Free ports for the servers tests start of their own (PostgreSQL clusters, NATS, chromedriver).

use std::net::TcpListener;

/// The ports tried: below Linux's ephemeral range (32768–60999), from which the kernel picks the
/// local port of every outgoing connection. A port from that range can be taken by a client's
/// connection between the check and the server's start, and a readiness probe connecting to it
/// before the server listens can even connect to itself (TCP simultaneous open), which looks like
/// a server that is up.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port on 127.0.0.1 that no one listens on now, outside the ephemeral range.
///
/// # Errors
/// When no port of the range could be bound.
pub(crate) fn free_port() -> std::io::Result<u16> {
    let span = u32::from(PORTS.end - PORTS.start);
    // A start that differs between processes and calls, so that tests running side by side
    // do not try the same ports in the same order.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for attempt in 0..span {
        let offset = (seed.wrapping_add(attempt.wrapping_mul(7_919))) % span;
        let port = PORTS.start + u16::try_from(offset).unwrap_or(0);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    // Every port of the range is taken: let the kernel choose one.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
