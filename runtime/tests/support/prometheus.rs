//! The Prometheus exporter of a test process (`metrics-exporter-prometheus`, its HTTP
//! listener), installed once as the process's recorder.

/// The exporter's port, installed (once, for the binary) with its HTTP listener, as an
/// application would; its runtime is a thread of its own, so that it outlives each test's.
pub fn exporter() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (installed, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    .with_http_listener(([127, 0, 0, 1], port))
                    .install()
                    .expect("the Prometheus exporter installs");
                factum::metrics::describe();
                installed.send(()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        done.recv().unwrap();
        port
    })
}
