//! Starting `factum serve` in a test: the tool (`cli`, with what the test registered in it)
//! on a runtime of its own, as the `factum` process would run (its future holds standard
//! input and output, which stay on one thread), listening on a free port.

use std::time::{Duration, Instant};

use factum::cli::Cli;

/// Serves the console of the store at `url` with `cli`, `more` options after `serve`; its
/// port, once it listens.
pub async fn serve(cli: Cli, url: &str, more: &[&str]) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let args: Vec<String> = [
        "factum",
        "--database-url",
        url,
        "serve",
        "--listen",
        &listen,
    ]
    .iter()
    .chain(more)
    .map(|arg| (*arg).to_owned())
    .collect();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
            .block_on(cli.run_with(args))
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the console did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    port
}
