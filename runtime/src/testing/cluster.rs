//! A throwaway PostgreSQL cluster for fault tests: its own data directory and port, started
//! with `initdb`/`pg_ctl`, restarted or stopped at will, removed when dropped. Tests that
//! restart or break a server use one, never the shared server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A PostgreSQL cluster of its own, on a free port of 127.0.0.1, trust authentication, user
/// `postgres`, run without `fsync` (tests need no durability across a machine crash; an
/// immediate shutdown is still a crash to the server, which recovers from its WAL, and the
/// operating system keeps what was written). Commits stay synchronous: a crash loses no
/// acknowledged commit.
///
/// Stopped (immediately) and removed when dropped.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use factum::testing::postgres::Cluster;
///
/// let cluster = Cluster::builder().setting("max_prepared_transactions", "4").start().await?;
/// // ... connect to cluster.url(), then:
/// cluster.restart().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    pg_ctl: PathBuf,
    run_as: Option<String>,
    /// The server's command-line options (port, socket directory, settings), which a start
    /// after a stop must give again: only `restart` reuses them by itself.
    options: String,
}

/// Settings of a [`Cluster`] before it starts.
#[derive(Debug, Default)]
pub struct ClusterBuilder {
    settings: Vec<(String, String)>,
}

impl ClusterBuilder {
    /// Sets a server setting (`-c name=value`), e.g. `max_prepared_transactions`.
    #[must_use]
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Creates the cluster (`initdb`) and starts it, waiting until it accepts connections.
    ///
    /// # Errors
    /// When `initdb`/`pg_ctl` are not installed (the message says what to install) or fail
    /// (the message carries their output).
    pub async fn start(self) -> std::io::Result<Cluster> {
        blocking(move || self.start_blocking()).await
    }

    fn start_blocking(self) -> std::io::Result<Cluster> {
        let initdb = pg_bin("initdb")?;
        let pg_ctl = pg_bin("pg_ctl")?;
        let dir =
            std::env::temp_dir().join(format!("factum-cluster-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        // initdb refuses to run as root: the cluster then belongs to the postgres user.
        let run_as = running_as_root().then(|| "postgres".to_owned());
        if let Some(user) = &run_as {
            run(Command::new("chown").arg(user).arg(&dir))?;
        }
        let port = super::free_port()?;
        let mut cluster = Cluster {
            dir,
            port,
            pg_ctl,
            run_as,
            options: String::new(),
        };
        let data = cluster.data();
        let mut command = cluster.command(&initdb)?;
        command.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        if let Err(error) = run(&mut command) {
            cluster.port = 0;
            return Err(error);
        }
        let mut options = format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c full_page_writes=off -c max_connections=100",
            dir = cluster.dir.display()
        );
        for (name, value) in &self.settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        cluster.options = options;
        let mut command = cluster.command(&cluster.pg_ctl.clone())?;
        command
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(cluster.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &cluster.options, "start"]);
        if let Err(error) = run(&mut command) {
            cluster.port = 0;
            return Err(error);
        }
        Ok(cluster)
    }
}

impl Cluster {
    /// A cluster with default settings, started.
    ///
    /// # Errors
    /// As [`ClusterBuilder::start`].
    pub async fn start() -> std::io::Result<Self> {
        ClusterBuilder::default().start().await
    }

    /// Settings before starting.
    #[must_use]
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The URL of its `postgres` database.
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Its port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    #[must_use]
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Crashes the server (`pg_ctl stop -m immediate`: no checkpoint, every connection cut):
    /// it recovers from its WAL at the next start.
    ///
    /// # Errors
    /// `pg_ctl`'s failure.
    pub async fn crash(&self) -> std::io::Result<()> {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]).await
    }

    /// Starts the server after [`Cluster::crash`] (or a stop), returning once it accepts
    /// connections.
    ///
    /// # Errors
    /// `pg_ctl`'s failure.
    pub async fn resume(&self) -> std::io::Result<()> {
        let log = self.dir.join("server.log");
        self.pg_ctl(&[
            "-l",
            &log.display().to_string(),
            "-w",
            "-t",
            "60",
            "-o",
            &self.options,
            "start",
        ])
        .await
    }

    /// `pg_ctl restart -m immediate`: a crash and a start, returning once the server accepts
    /// connections again.
    ///
    /// # Errors
    /// `pg_ctl`'s failure.
    pub async fn restart(&self) -> std::io::Result<()> {
        let log = self.dir.join("server.log");
        self.pg_ctl(&[
            "-m",
            "immediate",
            "-l",
            &log.display().to_string(),
            "-w",
            "-t",
            "60",
            "restart",
        ])
        .await
    }

    /// The server's log so far (for a failing test's message).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs `pg_ctl -D <data> <args>`.
    async fn pg_ctl(&self, args: &[&str]) -> std::io::Result<()> {
        let mut command = self.command(&self.pg_ctl)?;
        command.arg("-D").arg(self.data()).args(args);
        blocking(move || run(&mut command).map(drop)).await
    }

    /// `program`, run as the cluster's owner.
    fn command(&self, program: &Path) -> std::io::Result<Command> {
        Ok(match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.port != 0
            && let Ok(mut command) = self.command(&self.pg_ctl)
        {
            command
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"]);
            if let Err(error) = run(&mut command) {
                tracing::debug!(%error, "stopping a throwaway cluster");
            }
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(%error, dir = %self.dir.display(), "removing a throwaway cluster");
        }
    }
}

/// Runs blocking process work off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// Runs `command`, an error carrying its output when it fails.
fn run(command: &mut Command) -> std::io::Result<Output> {
    let output = command.output()?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(std::io::Error::other(format!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// A PostgreSQL server program: on `PATH`, or where Debian and Homebrew install them.
fn pg_bin(program: &str) -> std::io::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut candidates: Vec<PathBuf> = on_path.into_iter().map(|dir| dir.join(program)).collect();
    for root in ["/usr/lib/postgresql", "/opt/homebrew/opt", "/usr/local/opt"] {
        if let Ok(entries) = std::fs::read_dir(root) {
            let mut dirs: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
            // The newest version first.
            dirs.sort();
            dirs.reverse();
            candidates.extend(dirs.into_iter().map(|dir| dir.join("bin").join(program)));
        }
    }
    candidates.into_iter().find(|path| path.is_file()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "`{program}` not found: fault tests start a throwaway PostgreSQL cluster; install \
                 PostgreSQL's server programs (e.g. `apt install postgresql`)"
            ),
        )
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}
