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

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use statemachine_core::{ErrorCode, ResourceKind};

/// Registers a scenario's condition and reports it met, as the FilterGateway.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    server: examples::Server,
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
    let client = args.server.connect().await.map_err(anyhow::Error::msg)?;

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
