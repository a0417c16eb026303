//! A PICCOLO component asking a running StateManager for a state change,
//! with the typed [`transport_grpc::StateManagerClient`], then reading the
//! state and its history back.
//!
//! ```sh
//! cargo run -p statemanager &                      # the daemon, on 127.0.0.1:47006
//! cargo run -p transport-grpc --example send_change -- parking idle waiting
//! cargo run -p transport-grpc --example send_change -- \
//!     --addr http://127.0.0.1:47006 --kind scenario --source FilterGateway parking waiting satisfied
//! ```
//!
//! Usage: `send_change [--addr URL] [--kind scenario|package|model]
//! [--source NAME] NAME CURRENT TARGET`. CURRENT may be `""` (unknown).
//! States may be spelled `waiting`, `Waiting` or `SCENARIO_STATE_WAITING`.
//! Exits with 0 when the change is durable, 1 when it was refused, 2 on a
//! usage error.

use std::process::ExitCode;

use engine::HistoryQuery;
use statemachine_core::{ErrorCode, ResourceKind};
use transport_grpc::StateManagerClient;

const USAGE: &str = "usage: send_change [--addr URL] [--kind scenario|package|model] \
                     [--source NAME] NAME CURRENT TARGET";

struct Args {
    addr: String,
    kind: ResourceKind,
    source: String,
    name: String,
    current: String,
    target: String,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = "http://127.0.0.1:47006".to_owned();
    let mut kind = ResourceKind::Scenario;
    let mut source = "send_change example".to_owned();
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--addr" => addr = value("--addr")?,
            "--source" => source = value("--source")?,
            "--kind" => {
                kind = match value("--kind")?.to_ascii_lowercase().as_str() {
                    "scenario" => ResourceKind::Scenario,
                    "package" => ResourceKind::Package,
                    "model" => ResourceKind::Model,
                    other => return Err(format!("unknown kind '{other}'")),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with("--") => return Err(format!("unknown option '{flag}'")),
            _ => positional.push(arg),
        }
    }
    let [name, current, target]: [String; 3] = positional
        .try_into()
        .map_err(|given: Vec<String>| format!("expected NAME CURRENT TARGET, got {given:?}"))?;
    if !addr.contains("://") {
        addr = format!("http://{addr}");
    }
    Ok(Args {
        addr,
        kind,
        source,
        name,
        current,
        target,
    })
}

/// Prints a line to stdout; a closed stdout (`| head`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(problem) => {
            if !problem.is_empty() {
                eprintln!("send_change: {problem}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("send_change: {error}");
            ExitCode::from(1)
        }
    }
}

/// Sends the change and reads back; `Ok(false)` when the change was refused.
async fn run(args: &Args) -> Result<bool, transport_grpc::ClientError> {
    // Fails within a few seconds when nothing listens at the address; every
    // call below has a 10 s deadline (`with_timeout` changes it).
    let client = StateManagerClient::connect(&args.addr).await?;

    let answer = client
        .send_state_change(
            args.kind,
            &args.name,
            &args.current,
            &args.target,
            &args.source,
        )
        .await?;
    out!(
        "SendStateChange {} '{}' {} -> {}: {} {}",
        args.kind,
        args.name,
        if args.current.is_empty() {
            "?"
        } else {
            &args.current
        },
        args.target,
        answer.code,
        answer.message
    );
    if !answer.details.is_empty() {
        out!("  details: {}", answer.details);
    }
    out!("  transition_id: {}", answer.transition_id);

    match client.get_state(args.kind, &args.name).await? {
        Some(view) => out!(
            "GetResourceState {} '{}': {} (generation {})",
            view.kind,
            view.name,
            view.state,
            view.generation
        ),
        None => out!("GetResourceState {} '{}': not found", args.kind, args.name),
    }
    match client
        .history(args.kind, &args.name, HistoryQuery::default())
        .await
    {
        Ok(history) => {
            out!("GetResourceStateHistory (oldest first):");
            for entry in history {
                out!(
                    "  {} -> {}  source={} id={} reason={}",
                    entry.from.as_deref().unwrap_or("(none)"),
                    entry.to.as_deref().unwrap_or("(deleted)"),
                    entry.source,
                    entry.transition_id,
                    entry.reason
                );
            }
        }
        Err(error) => out!("GetResourceStateHistory: {error}"),
    }
    Ok(answer.code == ErrorCode::Success)
}
