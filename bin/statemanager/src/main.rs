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
mod logging;
mod metrics;
mod signals;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match config::Cli::try_parse() {
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
            eprintln!("statemanager: configuration error: {error:#}");
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
            tracing::error!("statemanager failed: {error:#}");
            ExitCode::from(1)
        }
    }
}
