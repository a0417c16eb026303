//! `statemanager`: the PICCOLO StateManager daemon.
//!
//! Reads its configuration (flags > `STATEMANAGER_*` environment > TOML
//! `--config` file > defaults), opens the store (etcd, or the embedded
//! in-memory store), starts the engine, serves the Pullpiri-compatible
//! `statemanager.StateManagerConnection` gRPC service with health and
//! reflection, optionally Prometheus metrics and a health check over HTTP,
//! and shuts down gracefully on SIGINT/SIGTERM.
//!
//! Exit codes: 0 after a signal-initiated shutdown (and for `--help`,
//! `--version`), 2 for an invalid command line or environment variable, 1
//! for any other failure to start or to keep running.

mod config;
mod daemon;
mod ha;
mod logging;
mod metrics;
mod signals;

use std::process::ExitCode;
use std::time::Duration;

use state_store::StoreError;

fn main() -> ExitCode {
    let cli = match config::Cli::try_parse_with_defaults() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let settings = match config::load(cli) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("statemanager: configuration error: {}", report(&error));
            return ExitCode::from(1);
        }
    };
    logging::init(settings.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = settings.worker_threads {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().thread_name("statemanager").build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(daemon::run(settings));
    // Tasks left behind by a bounded shutdown must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("statemanager failed: {}", report(&error));
            ExitCode::from(1)
        }
    }
}

/// An error for a log line: what was being done, down to the error that
/// ended it, joined with ": " (as `{:#}` does), but not below a
/// [`StoreError`]. A store error's message already says what its client
/// library reported; the library's own errors under it (a gRPC status, its
/// transport error) would only repeat that, at length.
fn report(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
        if cause.is::<StoreError>() {
            break;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_the_contexts_and_stops_at_the_store_error() {
        let store = StoreError::Unavailable {
            message: "tcp connect error (Unavailable)".into(),
            source: Some(state_store::Cause::new(std::io::Error::other(
                "transport error",
            ))),
        };
        let error = anyhow::Error::new(store).context("etcd at http://e:2379 is unreachable");
        assert_eq!(
            report(&error),
            "etcd at http://e:2379 is unreachable: store unavailable: tcp connect error (Unavailable)"
        );
        let plain = anyhow::Error::new(std::io::Error::other("refused")).context("binding");
        assert_eq!(report(&plain), format!("{plain:#}"));
    }
}
