//! Structured JSON logs. Fields are request ids, partner ids, control numbers, codes and timings: never PHI.

use tracing_subscriber::fmt::MakeWriter;

/// Installs the JSON log subscriber on standard output (level from `RUST_LOG`, default `info`). Safe to call
/// more than once.
pub fn init() {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let _ = tracing::subscriber::set_global_default(json_subscriber(&directives, std::io::stdout));
}

/// The subscriber [`init`] installs, filtered by `directives` (`RUST_LOG` syntax; `info` when they do not parse)
/// and writing to `writer`: the test that reads every log line of the conformance flows captures it this way.
pub fn json_subscriber<W>(directives: &str, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .with_writer(writer)
        .finish()
}
