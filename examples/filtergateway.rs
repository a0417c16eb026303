//! A FilterGateway-style client: it registers a scenario's condition
//! (Idle -> Waiting) and, when the condition is met, reports it (Waiting ->
//! Satisfied), as upstream's FilterGateway does, then follows the scenario
//! until the PolicyManager and the ActionController have taken it further.
//!
//! ```sh
//! scripts/run.sh &                                  # the daemon on :47006
//! cargo run -p examples --example filtergateway -- parking
//! # with mutual TLS (docs/security.md):
//! cargo run -p examples --example filtergateway -- --server https://statemanager:47006 \
//!     --ca ca.pem --cert filtergateway.pem --key filtergateway.key parking
//! ```
//!
//! Exits with 0 when both changes were accepted (or already made), 1 when
//! the StateManager refused one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use statemachine_core::{ErrorCode, ResourceKind};
use transport_grpc::StateManagerClient;
use transport_grpc::tls::ClientTls;

/// Registers a scenario's condition and reports it met, as the FilterGateway.
#[derive(Parser)]
struct Args {
    /// The StateManager (`https://` with the TLS options).
    #[arg(long, default_value = "http://127.0.0.1:47006")]
    server: String,
    /// CA to verify an https server with.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate (`spiffe://piccolo/component/filtergateway`).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// How long the condition takes to be met.
    #[arg(long, default_value_t = 1.0)]
    condition_after_secs: f64,
    /// The scenario.
    scenario: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("filtergateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = if args.server.starts_with("https://") {
        let tls = ClientTls {
            ca: args.ca,
            cert: args.cert,
            key: args.key,
            domain: None,
        };
        StateManagerClient::connect_with_tls(&args.server, &tls).await
    } else {
        StateManagerClient::connect(&args.server).await
    }
    .with_context(|| format!("connecting to {}", args.server))?;

    let steps = [
        ("idle", "waiting", "condition registered"),
        ("waiting", "satisfied", "condition met"),
    ];
    for (i, (current, target, what)) in steps.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs_f64(args.condition_after_secs.max(0.0))).await;
        }
        let answer = client
            .send_state_change(
                ResourceKind::Scenario,
                &args.scenario,
                current,
                target,
                "FilterGateway",
            )
            .await
            .context("SendStateChange")?;
        println!("{what}: {} {}", answer.code, answer.message);
        if answer.code != ErrorCode::Success {
            bail!(
                "the StateManager refused {current} -> {target}: {}",
                answer.details
            );
        }
    }
    match client
        .get_state(ResourceKind::Scenario, &args.scenario)
        .await
        .context("GetResourceState")?
    {
        Some(view) => println!("scenario '{}' is {}", args.scenario, view.state),
        None => println!("scenario '{}' is not known", args.scenario),
    }
    Ok(())
}
