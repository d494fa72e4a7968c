//! Browser tests (feature `browser`): a `chromedriver` of the test's own driving headless
//! Chromium (Debian's `chromium` and `chromium-driver` packages, which the test command
//! installs when missing), and screenshots kept for the README.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use fantoccini::{Client, Locator};

/// A `chromedriver` of the test's own, stopped on drop.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts `chromedriver` on a free port.
    ///
    /// # Panics
    /// When Chromium or its driver is not installed (saying what to install), or the driver
    /// does not start within 20 s: a test helper.
    #[must_use]
    pub fn start() -> Self {
        let found = |name: &str| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        assert!(
            found("chromedriver") && found("chromium"),
            "Chromium and its WebDriver are needed for the browser tests: install them (e.g. 'apt install chromium chromium-driver')"
        );
        let port = super::free_port().expect("a free port");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }

    /// A headless Chromium session, 1280 × 1000, with no network of its own. A refused
    /// session is asked for again, twice: Chromium's first start after its installation (its
    /// profile, its caches) can outlast the driver's wait on a loaded machine.
    ///
    /// # Panics
    /// When the driver refuses a session three times.
    pub async fn browser(&self) -> Client {
        let mut attempt = 1;
        loop {
            match self.session().await {
                Ok(client) => return client,
                Err(error) if attempt < 3 => {
                    eprintln!("the driver refused a browser session ({error}); asking again");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => panic!("a browser session: {error}"),
            }
        }
    }

    async fn session(&self) -> Result<Client, fantoccini::error::NewSessionError> {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"
            ] }),
        );
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
    }
}

/// Saves a screenshot of the page as `name` (a PNG) under `target/<dir>/` of the workspace
/// `root`, and under `docs/screenshots/` too (which the README shows) when
/// `FACTUM_WRITE_SCREENSHOTS` is set.
///
/// # Panics
/// When the screenshot fails or cannot be written: a test helper.
pub async fn screenshot(client: &Client, root: &Path, dir: &str, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let target = root.join("target").join(dir);
    std::fs::create_dir_all(&target).expect("the screenshots' directory");
    std::fs::write(target.join(name), &png).expect("the screenshot written");
    if std::env::var_os("FACTUM_WRITE_SCREENSHOTS").is_some() {
        let docs = root.join("docs/screenshots");
        std::fs::create_dir_all(&docs).expect("docs/screenshots");
        std::fs::write(docs.join(name), &png).expect("the screenshot written");
    }
}
