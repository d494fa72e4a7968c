//! A NATS server with JetStream of the test's own (feature `nats`): on a free port, with its own
//! storage directory, which a test can stop and start again (the same port, the same storage)
//! to see what a broker outage does. Stopped and removed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `nats-server -js` of the test's own; see the [module documentation](self).
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    storage: PathBuf,
    process: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts connections.
    ///
    /// # Errors
    /// When `nats-server` is not installed (the message says how to install it) or does not
    /// start within 10 s.
    pub fn start() -> std::io::Result<Self> {
        let port = super::free_port()?;
        let storage =
            std::env::temp_dir().join(format!("factum-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&storage)?;
        let mut server = Self {
            port,
            storage,
            process: None,
        };
        server.resume()?;
        Ok(server)
    }

    /// The server's address, for `async_nats::connect`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL: no goodbye to clients), keeping its storage.
    ///
    /// # Errors
    /// When the process cannot be killed.
    pub fn kill(&mut self) -> std::io::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill()?;
            process.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same storage, and waits until it
    /// accepts connections.
    ///
    /// # Errors
    /// As [`NatsServer::start`].
    pub fn resume(&mut self) -> std::io::Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        let process = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.storage)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!(
                        "could not run nats-server ({error}): install it (e.g. 'apt install nats-server', or from https://github.com/nats-io/nats-server/releases)"
                    ),
                )
            })?;
        self.process = Some(process);
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(10) {
            if let Some(status) = self.process.as_mut().and_then(|p| p.try_wait().transpose()) {
                self.process = None;
                return Err(std::io::Error::other(format!(
                    "nats-server on port {} exited at start ({}): is the port taken?",
                    self.port, status?
                )));
            }
            if greets(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "nats-server did not greet a client on port {} within 10 s",
                self.port
            ),
        ))
    }
}

/// Whether a server on `port` speaks NATS: it sends its `INFO` line to a new connection. A
/// listening socket alone is not enough: a client connecting before the server is ready can be
/// reset (seen on a loaded CI machine).
fn greets(port: u16) -> bool {
    use std::io::Read as _;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .is_err()
    {
        return false;
    }
    let mut head = [0_u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"INFO "
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            tracing::warn!(%error, "could not stop the test's nats-server");
        }
        if let Err(error) = std::fs::remove_dir_all(&self.storage) {
            tracing::warn!(%error, "could not remove the test's nats-server storage");
        }
    }
}
