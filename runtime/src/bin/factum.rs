//! The `factum` command-line tool: `factum --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    factum::cli::Cli::new().run().await
}
