//! A NodeAgent simulator: sends the container reports of a YAML scenario to
//! a StateManager, one full report per step, as a NodeAgent sends podman's
//! container list, and prints what the daemon then says of each model.
//!
//! ```sh
//! scripts/run.sh &                                   # the daemon on :47006
//! cargo run -p examples --example nodeagent_sim -- examples/oom-kill.yaml
//! # a NodeAgent under mutual TLS (its certificate names its node):
//! cargo run -p examples --example nodeagent_sim -- --server https://statemanager:47006 \
//!     --ca ca.pem --cert nodeagent-hpc-1.pem --key nodeagent-hpc-1.key examples/oom-kill.yaml
//! ```
//!
//! The scenario format is described in `examples/src/lib.rs`
//! ([`examples::parse_scenario`]); `examples/oom-kill.yaml` is one.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use statemachine_core::ResourceKind;

/// Sends the container reports of a YAML scenario, as NodeAgents would.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    server: examples::Server,
    /// The scenario file.
    scenario: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nodeagent_sim: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("reading {}", args.scenario.display()))?;
    let steps = examples::parse_scenario(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{}", args.scenario.display()))?;
    let client = args.server.connect().await.map_err(anyhow::Error::msg)?;

    for (i, step) in steps.into_iter().enumerate() {
        tokio::time::sleep(step.after).await;
        let names: Vec<String> = step
            .containers
            .iter()
            .flat_map(|c| c.names.clone())
            .collect();
        let answer = client
            .report_containers(&step.node, step.containers)
            .await
            .with_context(|| format!("step {}: the report of node {}", i + 1, step.node))?;
        println!(
            "step {}: node {} reported {names:?}: {answer}",
            i + 1,
            step.node
        );
        // What the StateManager derived for the models behind them.
        let (views, _) = client
            .list(ResourceKind::Model, None, 0)
            .await
            .context("ListResourcesByState")?;
        let models: BTreeSet<String> = views
            .into_iter()
            .map(|view| format!("{}={}", view.name, view.state))
            .collect();
        println!(
            "  models: {}",
            models.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}
