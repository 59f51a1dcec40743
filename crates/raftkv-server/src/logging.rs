//! Logging: `tracing` events to stderr (stdout is kept for the one "ready" line the test
//! harness and scripts wait for).

/// Install the subscriber; `filter` overrides `RUST_LOG`, which defaults to `info`.
pub fn init(filter: Option<&str>) {
    let filter = match filter {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
