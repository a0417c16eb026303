//! The command line: every subcommand, option and its environment variable,
//! and the examples the help ends with (run by the system tests).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use statemachine_core::ResourceKind;

/// The daemon's address when neither `--server` nor `SMCTL_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:47006";

/// The examples of `smctl --help`, one command a line, each runnable
/// against a daemon in the order given (`# exit 1` marks the one that is
/// refused; `# until Ctrl-C` the one that follows until interrupted). The
/// system tests run every line, with `node-report.yaml` written as
/// docs/smctl.md shows.
pub const EXAMPLES: &str = "\
  smctl set scenario parking waiting --from idle --source FilterGateway
  smctl set scenario parking completed                  # exit 1
  smctl get scenario parking -o json
  smctl list scenario --state waiting
  smctl history scenario parking --limit 10
  smctl report node-report.yaml
  smctl list model -o yaml
  smctl recovery trigger model nav --action notify --reason 'by hand'
  smctl recovery status model nav
  smctl alerts list
  smctl alerts ack \"$(smctl alerts list -o name | head -n 1)\" --by operator --message 'looking into it'
  smctl watch scenario                                  # until Ctrl-C
  smctl diagram scenario > scenario.mmd
  source <(smctl completions bash)";

/// What `--help` prints after the options: exit codes and examples.
pub const AFTER_HELP: &str = concat!(
    "Exit codes:\n",
    "  0  done\n",
    "  1  refused by the daemon: the error code's name and the message are printed\n",
    "     (e.g. INVALID_STATE_TRANSITION, RESOURCE_NOT_FOUND, INVALID_REQUEST)\n",
    "  2  usage: a bad option or argument, an unreadable or malformed file, a bad\n",
    "     --server URL or TLS file\n",
    "  3  the daemon cannot be reached, or did not answer within --timeout\n",
    "     (also UNAVAILABLE and TIMEOUT answers: its store is down; retrying may help)\n",
    "\n",
    "Examples:\n",
    "  smctl set scenario parking waiting --from idle --source FilterGateway\n",
    "  smctl set scenario parking completed                  # exit 1\n",
    "  smctl get scenario parking -o json\n",
    "  smctl list scenario --state waiting\n",
    "  smctl history scenario parking --limit 10\n",
    "  smctl report node-report.yaml\n",
    "  smctl list model -o yaml\n",
    "  smctl recovery trigger model nav --action notify --reason 'by hand'\n",
    "  smctl recovery status model nav\n",
    "  smctl alerts list\n",
    "  smctl alerts ack \"$(smctl alerts list -o name | head -n 1)\" --by operator --message 'looking into it'\n",
    "  smctl watch scenario                                  # until Ctrl-C\n",
    "  smctl diagram scenario > scenario.mmd\n",
    "  source <(smctl completions bash)\n",
    "\n",
    "Output is a table by default; -o json, -o yaml or -o name for scripts.\n",
    "Colours only when stdout is a terminal and NO_COLOR is unset. See docs/smctl.md."
);

/// smctl: operate a PICCOLO StateManager from a shell.
#[derive(Debug, Parser)]
#[command(name = "smctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How to reach the daemon.
    #[command(flatten)]
    pub connection: Connection,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table, env = "SMCTL_OUTPUT")]
    pub output: Format,
}

/// The daemon's address, the per-call timeout and the client TLS files.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The daemon's gRPC address (`http://` or, with --ca, `https://`).
    #[arg(long, global = true, env = "SMCTL_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub server: String,
    /// The longest each call may take, connecting included (e.g. `500ms`, `10s`).
    #[arg(long, global = true, env = "SMCTL_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// The CA that signed the daemon's certificate (PEM), for an `https://` server.
    #[arg(long, global = true, env = "SMCTL_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM), for mutual TLS; with --key.
    #[arg(
        long,
        global = true,
        env = "SMCTL_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// This client's private key (PEM); with --cert.
    #[arg(
        long,
        global = true,
        env = "SMCTL_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
    /// The name to verify the daemon's certificate against, when it is not the URL's host.
    #[arg(long, global = true, env = "SMCTL_DOMAIN", value_name = "NAME")]
    pub domain: Option<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration such as 500ms or 10s: {e}"))?;
    if duration.is_zero() {
        return Err("the timeout must be longer than 0s".to_owned());
    }
    Ok(duration)
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON (one document; `watch` prints one per line).
    Json,
    /// YAML (`watch` separates events with `---`).
    Yaml,
    /// Names or ids only, one a line.
    Name,
}

/// A managed resource kind (plurals are accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A scenario.
    #[value(alias = "scenarios")]
    Scenario,
    /// A package.
    #[value(alias = "packages")]
    Package,
    /// A model.
    #[value(alias = "models")]
    Model,
}

impl From<Kind> for ResourceKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Scenario => ResourceKind::Scenario,
            Kind::Package => ResourceKind::Package,
            Kind::Model => ResourceKind::Model,
        }
    }
}

/// A kind of the recovery methods: package or model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HealKind {
    /// A package.
    Package,
    /// A model.
    Model,
}

impl From<HealKind> for ResourceKind {
    fn from(kind: HealKind) -> Self {
        match kind {
            HealKind::Package => ResourceKind::Package,
            HealKind::Model => ResourceKind::Model,
        }
    }
}

/// Any kind with a state diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiagramKind {
    /// The scenario table, re-arming edges flagged `(allow_rearm)`.
    Scenario,
    /// The documented package edges.
    Package,
    /// The documented model edges.
    Model,
    /// What the container derivation makes of podman's state maps.
    Container,
}

impl From<DiagramKind> for ResourceKind {
    fn from(kind: DiagramKind) -> Self {
        match kind {
            DiagramKind::Scenario => ResourceKind::Scenario,
            DiagramKind::Package => ResourceKind::Package,
            DiagramKind::Model => ResourceKind::Model,
            DiagramKind::Container => ResourceKind::Container,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The state of one resource, with its health (GetResourceState).
    Get {
        /// scenario, package or model.
        kind: Kind,
        /// The resource's name.
        name: String,
    },
    /// The resources of a kind, sorted by name (ListResourcesByState).
    List {
        /// scenario, package or model.
        kind: Kind,
        /// Only those in this state (any spelling: waiting, Waiting, SCENARIO_STATE_WAITING).
        #[arg(long)]
        state: Option<String>,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// A resource's recorded transitions, oldest first (GetResourceStateHistory).
    History {
        /// scenario, package or model.
        kind: Kind,
        /// The resource's name.
        name: String,
        /// The newest N (0: the daemon's default, 100).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Follows committed transitions until Ctrl-C (SubscribeToStateChanges).
    Watch {
        /// Only this kind.
        kind: Option<Kind>,
        /// Only this resource.
        name: Option<String>,
        /// Also recovery events (RecoveryStart, RecoveryComplete, RecoveryFailed).
        #[arg(long)]
        recovery: bool,
        /// Also alerts and warnings.
        #[arg(long)]
        health: bool,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Asks for a state change (SendStateChange): a scenario's next state, or a
    /// package's or model's state along a documented edge.
    Set {
        /// scenario, package or model.
        kind: Kind,
        /// The resource's name.
        name: String,
        /// The state asked for.
        target: String,
        /// The state the caller believes it is in (default: as recorded).
        #[arg(long, value_name = "CURRENT", default_value = "")]
        from: String,
        /// Who asks, for the record (and for --enforce-sources).
        #[arg(long, default_value = "smctl", env = "SMCTL_SOURCE")]
        source: String,
    },
    /// Sends a node's full container list as a NodeAgent does
    /// (SendChangedContainerList), from a YAML or JSON file (`-`: stdin).
    Report {
        /// The file: node_name and containers (docs/smctl.md shows the shape).
        file: PathBuf,
    },
    /// Self-healing incidents (TriggerRecovery, AbortRecovery, GetRecoveryStatus).
    Recovery {
        /// What to do.
        #[command(subcommand)]
        command: RecoveryCommand,
    },
    /// Pending alerts (GetPendingAlerts, AcknowledgeAlert).
    Alerts {
        /// What to do.
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Prints a mermaid stateDiagram-v2 generated from the core's tables.
    Diagram {
        /// scenario, package, model or container.
        kind: DiagramKind,
    },
    /// Prints a shell completion script.
    Completions {
        /// bash, zsh or fish.
        shell: Shell,
    },
}

/// The shells completions are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash: `source <(smctl completions bash)`.
    Bash,
    /// zsh: save as `_smctl` in a directory of `$fpath`.
    Zsh,
    /// fish: save as `~/.config/fish/completions/smctl.fish`.
    Fish,
}

/// An incident: by id, or a resource's open (else latest) one.
#[derive(Debug, Clone, Args)]
pub struct IncidentArgs {
    /// package or model.
    #[arg(required_unless_present = "id")]
    pub kind: Option<HealKind>,
    /// The resource's name.
    #[arg(required_unless_present = "id")]
    pub name: Option<String>,
    /// The incident's recovery id instead of a resource.
    #[arg(long, conflicts_with_all = ["kind", "name"])]
    pub id: Option<String>,
}

/// `smctl recovery ...`.
#[derive(Debug, Subcommand)]
pub enum RecoveryCommand {
    /// Opens a manual incident for a package or model (or joins its open one).
    Trigger {
        /// package or model.
        kind: HealKind,
        /// The resource's name.
        name: String,
        /// The ladder, first rung first (repeatable): restart, recreate, relocate,
        /// rollback-version, reset-config, notify, isolate [default: the Manual ladder].
        #[arg(long = "action", value_name = "ACTION")]
        actions: Vec<String>,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
        /// Abort an open incident and start anew.
        #[arg(long)]
        force: bool,
    },
    /// Ends an incident Aborted.
    Abort {
        /// Which incident.
        #[command(flatten)]
        incident: IncidentArgs,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// An incident, open or ended, with its steps.
    Status {
        /// Which incident.
        #[command(flatten)]
        incident: IncidentArgs,
    },
}

/// `smctl alerts ...`.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Active and acknowledged alerts, newest first.
    List {
        /// At least this severity: info, warning, error or critical.
        #[arg(long)]
        severity: Option<String>,
        /// Only alerts about this kind.
        #[arg(long)]
        kind: Option<Kind>,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Acknowledges an alert.
    Ack {
        /// The alert's id (`smctl alerts list -o name`).
        id: String,
        /// Who acknowledges it.
        #[arg(long, env = "SMCTL_USER")]
        by: String,
        /// Why.
        #[arg(long, short, default_value = "")]
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_help_shows_the_examples() {
        let mut examples = String::new();
        for line in EXAMPLES.lines() {
            examples.push_str(line);
            examples.push('\n');
        }
        assert!(
            AFTER_HELP.contains(&examples),
            "AFTER_HELP repeats EXAMPLES"
        );
    }
}
