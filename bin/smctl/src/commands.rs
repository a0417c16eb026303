//! The subcommands, each over `transport_grpc::StateManagerClient`: one call
//! (or one subscription) with the `--timeout` deadline, its answer printed
//! in the chosen format.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use clap::CommandFactory;
use engine::{AlertQuery, Delivery, EventFilter, HistoryQuery, IncidentRef, TriggerRequest};
use engine::{HealthView, RecoveryView, ResourceView};
use futures::StreamExt;
use serde::Serialize;
use statemachine_core::alert::{Alert, AlertSeverity};
use statemachine_core::healing::{Incident, RecoveryAction};
use statemachine_core::record::HistoryEntry;
use statemachine_core::{ErrorCode, ResourceKind};
use transport_grpc::{ClientTls, StateManagerClient};

use crate::cli::{AlertsCommand, Cli, Command, Connection, Format, IncidentArgs, RecoveryCommand};
use crate::output::{Cell, Printer, or_dash, table, time};
use crate::{Failure, code_name, diagram, report};

/// Runs the parsed command line; `Ok` when it did what was asked.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let server = cli.connection.server.clone();
    let timeout = cli.connection.timeout;
    run_command(cli).await.map_err(|mut failure| {
        // The client's own deadline (grpc-timeout) says only "Timeout expired".
        if failure.code.as_deref() == Some(code_name(ErrorCode::Timeout))
            && failure.message == "Timeout expired"
        {
            failure.message = format!(
                "no answer from the StateManager at '{server}' within {timeout:?} ({})",
                failure.message
            );
        }
        failure
    })
}

async fn run_command(cli: Cli) -> Result<(), Failure> {
    let printer = Printer::new(cli.output);
    match cli.command {
        Command::Diagram { kind } => {
            printer.raw(&diagram::mermaid(kind.into()));
            Ok(())
        }
        Command::Completions { shell } => {
            let shell = match shell {
                crate::cli::Shell::Bash => clap_complete::Shell::Bash,
                crate::cli::Shell::Zsh => clap_complete::Shell::Zsh,
                crate::cli::Shell::Fish => clap_complete::Shell::Fish,
            };
            let mut command = Cli::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "smctl", &mut out);
            printer.raw(&String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::Report { file } => {
            // Read before connecting: a bad file is a usage error (exit 2).
            let list = report::read(&file).map_err(|e| Failure::usage(e.to_string()))?;
            let client = connect(&cli.connection).await?;
            let (node, containers) = list.into_reported();
            let answer = client.report_containers(&node, containers).await?;
            #[derive(Serialize)]
            struct Out<'a> {
                node: &'a str,
                resp: &'a str,
            }
            if !printer.structured(&Out {
                node: &node,
                resp: &answer,
            }) {
                printer.raw(&format!("{answer}\n"));
            }
            Ok(())
        }
        command => {
            let client = connect(&cli.connection).await?;
            let timeout = cli.connection.timeout;
            remote(command, &client, &printer, timeout).await
        }
    }
}

/// Connects within `--timeout`, over TLS for an `https://` server.
pub async fn connect(connection: &Connection) -> Result<StateManagerClient, Failure> {
    let server = connection.server.as_str();
    let tls = ClientTls {
        ca: connection.ca.clone(),
        cert: connection.cert.clone(),
        key: connection.key.clone(),
        domain: connection.domain.clone(),
    };
    let https = server
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if !https && (tls.ca.is_some() || tls.cert.is_some()) {
        return Err(Failure::usage(format!(
            "--ca/--cert/--key are for an https:// server; '{server}' is not one"
        )));
    }
    let connecting = async {
        if https {
            StateManagerClient::connect_with_tls(server, &tls).await
        } else {
            StateManagerClient::connect(server).await
        }
    };
    let client = bounded(connection.timeout, server, connecting).await??;
    Ok(client.with_timeout(connection.timeout))
}

/// `call`, or exit 3 when it takes longer than `timeout`.
async fn bounded<T>(
    timeout: Duration,
    server: &str,
    call: impl Future<Output = T>,
) -> Result<T, Failure> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Failure {
            exit: crate::Exit::Unreachable,
            code: None,
            message: format!("no answer from the StateManager at '{server}' within {timeout:?}"),
        })
}

async fn remote(
    command: Command,
    client: &StateManagerClient,
    printer: &Printer,
    timeout: Duration,
) -> Result<(), Failure> {
    match command {
        Command::Get { kind, name } => {
            let kind = ResourceKind::from(kind);
            let Some((view, health)) = client.get_state_with_health(kind, &name).await? else {
                return Err(Failure::refused(
                    ErrorCode::ResourceNotFound,
                    format!("{kind} '{name}' not found"),
                ));
            };
            print_resources(printer, &[ResourceOut::new(view, health)], None);
            Ok(())
        }
        Command::List { kind, state, limit } => {
            let (views, total) = client.list(kind.into(), state.as_deref(), limit).await?;
            let items: Vec<_> = views
                .into_iter()
                .map(|v| ResourceOut::new(v, None))
                .collect();
            print_resources(printer, &items, Some(total));
            Ok(())
        }
        Command::History { kind, name, limit } => {
            let query = HistoryQuery {
                limit,
                ..Default::default()
            };
            let entries = client.history(kind.into(), &name, query).await?;
            print_history(printer, &entries);
            Ok(())
        }
        Command::Set {
            kind,
            name,
            target,
            from,
            source,
        } => {
            let answer = client
                .send_state_change(kind.into(), &name, &from, &target, &source)
                .await?;
            let out = ChangeOut {
                code: code_name(answer.code),
                message: answer.message.clone(),
                details: answer.details.clone(),
                transition_id: answer.transition_id.clone(),
                timestamp_ns: answer.timestamp_ns,
            };
            if answer.code != ErrorCode::Success {
                // The answer goes to stdout for scripts; the refusal to stderr.
                printer.structured(&out);
                let mut message = answer.message;
                if !answer.details.is_empty() {
                    message.push_str(&format!(" ({})", answer.details));
                }
                return Err(Failure::refused(answer.code, message));
            }
            if !printer.structured(&out) {
                match printer.format {
                    Format::Name => printer.raw(&format!("{}\n", out.transition_id)),
                    _ => printer.raw(&format!(
                        "{}\ntransition_id: {}\n",
                        out.message, out.transition_id
                    )),
                }
            }
            Ok(())
        }
        Command::Watch {
            kind,
            name,
            recovery,
            health,
            count,
        } => {
            let filter = EventFilter {
                resource_kind: kind.map(ResourceKind::from),
                resource_name: name,
                include_recovery: recovery,
                include_health: health,
            };
            watch(client, printer, &filter, count).await
        }
        Command::Recovery { command } => recovery(client, printer, command).await,
        Command::Alerts { command } => alerts(client, printer, command).await,
        Command::Diagram { .. } | Command::Completions { .. } | Command::Report { .. } => {
            // Handled without a connection in `run`.
            let _ = timeout;
            Ok(())
        }
    }
}

/// A resource as `get` and `list` print it.
#[derive(Debug, Serialize)]
pub struct ResourceOut {
    /// `scenario`, `package`, `model`.
    pub kind: &'static str,
    /// The name.
    pub name: String,
    /// The canonical state.
    pub state: String,
    /// The store revision of the state key (0: the default state).
    pub generation: i64,
    /// When it last changed (ns), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_ns: Option<i64>,
    /// From the definitions, and the health figures.
    pub metadata: BTreeMap<String, String>,
    /// Whether every health check passed (`get` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// The health message and the failed checks (`get` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// `Running` while an open incident recovers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_state: Option<String>,
}

impl ResourceOut {
    fn new(view: ResourceView, health: Option<HealthView>) -> Self {
        let (healthy, message, desired, last) = match health {
            Some(h) => (
                Some(h.healthy),
                Some(h.message),
                h.desired_state,
                h.last_transition_ns,
            ),
            None => (None, None, None, None),
        };
        Self {
            kind: view.kind.as_key_segment(),
            name: view.name,
            state: view.state,
            generation: view.generation,
            last_transition_ns: view.last_transition_ns.or(last),
            metadata: view.metadata,
            healthy,
            health: message,
            desired_state: desired,
        }
    }
}

#[derive(Serialize)]
struct ListOut<'a> {
    items: &'a [ResourceOut],
    total: usize,
}

fn print_resources(printer: &Printer, items: &[ResourceOut], total: Option<usize>) {
    let printed = match total {
        Some(total) => printer.structured(&ListOut { items, total }),
        None => match items.first() {
            Some(item) => printer.structured(item),
            None => false,
        },
    };
    if printed {
        return;
    }
    if printer.format == Format::Name {
        for item in items {
            printer.raw(&format!("{}\n", item.name));
        }
        return;
    }
    let with_health = total.is_none();
    let rows: Vec<Vec<Cell>> = items
        .iter()
        .map(|item| {
            let mut row = vec![
                Cell::from(item.kind),
                Cell::from(item.name.as_str()),
                printer.state(&item.state),
                Cell::from(item.generation.to_string()),
                Cell::from(time(item.last_transition_ns)),
            ];
            if with_health {
                row.push(Cell::from(match item.healthy {
                    Some(true) => "healthy".to_owned(),
                    Some(false) => item.health.clone().unwrap_or_default(),
                    None => "-".to_owned(),
                }));
            }
            row
        })
        .collect();
    let mut header = vec!["KIND", "NAME", "STATE", "GENERATION", "CHANGED"];
    if with_health {
        header.push("HEALTH");
    }
    let mut text = table(&header, &rows);
    if let (true, Some(item)) = (with_health, items.first())
        && !item.metadata.is_empty()
    {
        text.push_str("\nMETADATA\n");
        let rows: Vec<Vec<Cell>> = item
            .metadata
            .iter()
            .map(|(k, v)| vec![Cell::from(format!("  {k}")), Cell::from(v.as_str())])
            .collect();
        let body = table(&["", ""], &rows);
        text.push_str(body.split_once('\n').map_or("", |(_, rest)| rest));
    }
    if let Some(total) = total
        && total > items.len()
    {
        text.push_str(&format!("({} of {total} shown)\n", items.len()));
    }
    printer.raw(&text);
}

fn print_history(printer: &Printer, entries: &[HistoryEntry]) {
    if printer.structured(&entries) {
        return;
    }
    if printer.format == Format::Name {
        for entry in entries {
            printer.raw(&format!("{}\n", entry.transition_id));
        }
        return;
    }
    let rows: Vec<Vec<Cell>> = entries
        .iter()
        .map(|e| {
            vec![
                Cell::from(time(Some(e.at_ns))),
                printer.state(e.from.as_deref().unwrap_or("-")),
                printer.state(e.to.as_deref().unwrap_or("(removed)")),
                Cell::from(or_dash(&e.source)),
                Cell::from(or_dash(&e.reason)),
                Cell::from(or_dash(&e.transition_id)),
            ]
        })
        .collect();
    printer.raw(&table(
        &["AT", "FROM", "TO", "SOURCE", "REASON", "TRANSITION-ID"],
        &rows,
    ));
}

/// The answer of `set`.
#[derive(Debug, Serialize)]
pub struct ChangeOut {
    /// The error code's name (`SUCCESS`, `INVALID_STATE_TRANSITION`).
    pub code: &'static str,
    /// The daemon's message.
    pub message: String,
    /// Why, or what would be accepted.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
    /// The transition id.
    pub transition_id: String,
    /// When it was decided (ns).
    pub timestamp_ns: i64,
}

/// One event as `watch` prints it.
#[derive(Debug, Serialize)]
pub struct EventOut {
    /// `StateChange`, `RecoveryStart`, ..., or `Lagged`.
    pub event: String,
    /// The event id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `Info`, `Warning`, `Error`, `Critical`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub severity: String,
    /// `scenario`, `package`, `model`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The resource.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The state left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The state entered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// When (ns).
    pub at_ns: i64,
    /// Who caused it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The transition id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub transition_id: String,
    /// For people.
    pub description: String,
    /// `reason`, `resource_kind`, recovery and alert facts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl EventOut {
    fn new(delivery: Delivery) -> Self {
        match delivery {
            Delivery::Event(event) => Self {
                event: format!("{:?}", event.kind),
                id: event.id.clone(),
                severity: format!("{:?}", event.severity),
                kind: event.resource_kind.as_key_segment().to_owned(),
                name: event.resource_name.clone(),
                from: event.from.clone(),
                to: event.to.clone(),
                at_ns: event.at_ns,
                source: event.source.clone(),
                transition_id: event.transition_id.clone(),
                description: event.description.clone(),
                metadata: event.metadata.clone(),
            },
            Delivery::Lagged(missed) => Self {
                event: "Lagged".to_owned(),
                id: String::new(),
                severity: "Warning".to_owned(),
                kind: String::new(),
                name: String::new(),
                from: None,
                to: None,
                at_ns: engine::wall_clock_ns(),
                source: String::new(),
                transition_id: String::new(),
                description: format!("{missed} events missed: re-read the states"),
                metadata: BTreeMap::new(),
            },
        }
    }
}

const WATCH_HEADER: [&str; 6] = ["AT", "EVENT", "KIND", "NAME", "FROM", "TO"];

async fn watch(
    client: &StateManagerClient,
    printer: &Printer,
    filter: &EventFilter,
    count: Option<u64>,
) -> Result<(), Failure> {
    let stream = client.subscribe(filter).await?;
    let mut stream = std::pin::pin!(stream);
    let widths = [24, 16, 9, 24, 10];
    if printer.format == Format::Table {
        printer.raw(&watch_row(&widths, WATCH_HEADER.map(Cell::from)));
    }
    let mut seen = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    let mut ctrl_c = std::pin::pin!(ctrl_c);
    while count.is_none_or(|n| seen < n) {
        let item = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            item = stream.next() => item,
        };
        let delivery = match item {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return Err(error.into()),
            None => {
                return Err(Failure {
                    exit: crate::Exit::Unreachable,
                    code: None,
                    message: "the StateManager ended the subscription".to_owned(),
                });
            }
        };
        seen += 1;
        let event = EventOut::new(delivery);
        if printer.streamed(&event) {
            continue;
        }
        match printer.format {
            Format::Name => printer.raw(&format!("{}\n", event.name)),
            _ => {
                let line = watch_row(
                    &widths,
                    [
                        Cell::from(time(Some(event.at_ns))),
                        Cell::from(event.event.as_str()),
                        Cell::from(or_dash(&event.kind)),
                        Cell::from(or_dash(&event.name)),
                        printer.state(event.from.as_deref().unwrap_or("-")),
                        printer.state(event.to.as_deref().unwrap_or("-")),
                    ],
                );
                printer.raw(&line);
            }
        }
    }
    Ok(())
}

/// One line of `watch`'s table: fixed widths, since rows come one at a time.
fn watch_row(widths: &[usize; 5], cells: [Cell; 6]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        match widths.get(i) {
            Some(&width) => {
                line.push_str(&cell.padded(width));
                line.push_str("  ");
            }
            None => line.push_str(&cell.padded(0)),
        }
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

fn incident_ref(args: IncidentArgs) -> Result<IncidentRef, Failure> {
    match (args.id, args.kind, args.name) {
        (Some(id), _, _) => Ok(IncidentRef::Id(id)),
        (None, Some(kind), Some(name)) => Ok(IncidentRef::Resource(kind.into(), name)),
        _ => Err(Failure::usage("give KIND NAME or --id ID")),
    }
}

fn parse_action(text: &str) -> Result<RecoveryAction, Failure> {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    RecoveryAction::ALL
        .into_iter()
        .find(|a| fold(a.as_str()) == fold(text))
        .ok_or_else(|| {
            let names: Vec<_> = RecoveryAction::ALL.iter().map(|a| a.as_str()).collect();
            Failure::usage(format!(
                "unknown recovery action '{text}'; allowed: {}",
                names.join(", ")
            ))
        })
}

fn parse_severity(text: &str) -> Result<AlertSeverity, Failure> {
    match text.to_ascii_lowercase().as_str() {
        "info" => Ok(AlertSeverity::Info),
        "warning" => Ok(AlertSeverity::Warning),
        "error" => Ok(AlertSeverity::Error),
        "critical" => Ok(AlertSeverity::Critical),
        _ => Err(Failure::usage(format!(
            "unknown severity '{text}'; allowed: info, warning, error, critical"
        ))),
    }
}

/// An incident as `recovery` prints it.
#[derive(Debug, Serialize)]
pub struct RecoveryOut {
    /// What was done (trigger, abort) or where it stands (status).
    pub message: String,
    /// The durable record.
    pub incident: Incident,
    /// The ladder it walks.
    pub ladder: Vec<RecoveryAction>,
    /// 0–100.
    pub progress: f32,
}

impl RecoveryOut {
    fn new(message: String, view: RecoveryView) -> Self {
        Self {
            message,
            incident: view.incident,
            ladder: view.ladder,
            progress: view.progress,
        }
    }
}

fn print_recovery(printer: &Printer, out: &RecoveryOut) {
    if printer.structured(out) {
        return;
    }
    if printer.format == Format::Name {
        printer.raw(&format!("{}\n", out.incident.id));
        return;
    }
    let i = &out.incident;
    let ladder: Vec<_> = out.ladder.iter().map(|a| a.as_str()).collect();
    let mut text = format!("{}\n\n", out.message);
    text.push_str(&table(
        &[
            "ID", "RESOURCE", "ISSUE", "PHASE", "RUNG", "ACTIONS", "LADDER",
        ],
        &[vec![
            Cell::from(i.id.as_str()),
            Cell::from(format!("{}/{}", i.kind.as_key_segment(), i.name)),
            Cell::from(format!("{:?}", i.issue)),
            printer.state(&format!("{:?}", i.phase)),
            Cell::from(format!("{} of {}", i.rung + 1, out.ladder.len())),
            Cell::from(i.executed.to_string()),
            Cell::from(ladder.join(", ")),
        ]],
    ));
    if !i.steps.is_empty() {
        text.push('\n');
        let rows: Vec<Vec<Cell>> = i
            .steps
            .iter()
            .map(|s| {
                vec![
                    Cell::from((s.rung + 1).to_string()),
                    Cell::from(s.action.as_str()),
                    Cell::from(time(Some(s.at_ns))),
                    Cell::from(time(s.delivered_ns)),
                    Cell::from(format!("{:?}", s.outcome)),
                ]
            })
            .collect();
        text.push_str(&table(
            &["STEP", "ACTION", "TAKEN", "DELIVERED", "OUTCOME"],
            &rows,
        ));
    }
    printer.raw(&text);
}

async fn recovery(
    client: &StateManagerClient,
    printer: &Printer,
    command: RecoveryCommand,
) -> Result<(), Failure> {
    let out = match command {
        RecoveryCommand::Trigger {
            kind,
            name,
            actions,
            reason,
            force,
        } => {
            let actions = actions
                .iter()
                .map(|a| parse_action(a))
                .collect::<Result<Vec<_>, _>>()?;
            let request = TriggerRequest {
                kind: kind.into(),
                name,
                actions,
                reason,
                force,
            };
            let answer = client.trigger_recovery(&request).await?;
            RecoveryOut::new(answer.message, answer.view)
        }
        RecoveryCommand::Abort { incident, reason } => {
            let target = incident_ref(incident)?;
            let answer = client.abort_recovery(&target, &reason).await?;
            RecoveryOut::new(answer.message, answer.view)
        }
        RecoveryCommand::Status { incident } => {
            let target = incident_ref(incident)?;
            let Some(view) = client.recovery_status(&target).await? else {
                let what = match &target {
                    IncidentRef::Id(id) => format!("no incident '{id}'"),
                    IncidentRef::Resource(kind, name) => format!("{kind} '{name}' has no incident"),
                };
                return Err(Failure::refused(ErrorCode::ResourceNotFound, what));
            };
            RecoveryOut::new(view.message.clone(), view)
        }
    };
    print_recovery(printer, &out);
    Ok(())
}

#[derive(Serialize)]
struct AlertsOut<'a> {
    alerts: &'a [Alert],
    total: usize,
}

async fn alerts(
    client: &StateManagerClient,
    printer: &Printer,
    command: AlertsCommand,
) -> Result<(), Failure> {
    let alerts = match command {
        AlertsCommand::List {
            severity,
            kind,
            limit,
        } => {
            let query = AlertQuery {
                min_severity: severity.as_deref().map(parse_severity).transpose()?,
                kind: kind.map(ResourceKind::from),
                limit,
            };
            let page = client.pending_alerts(&query).await?;
            if printer.structured(&AlertsOut {
                alerts: &page.alerts,
                total: page.total,
            }) {
                return Ok(());
            }
            page.alerts
        }
        AlertsCommand::Ack { id, by, message } => {
            if id.is_empty() {
                return Err(Failure::usage("the alert id is empty"));
            }
            let alert = client.acknowledge_alert(&id, &by, &message).await?;
            if printer.structured(&alert) {
                return Ok(());
            }
            vec![alert]
        }
    };
    if printer.format == Format::Name {
        for alert in &alerts {
            printer.raw(&format!("{}\n", alert.id));
        }
        return Ok(());
    }
    let rows: Vec<Vec<Cell>> = alerts
        .iter()
        .map(|a| {
            vec![
                Cell::from(a.id.as_str()),
                Cell::from(format!("{:?}", a.severity)),
                Cell::from(format!("{:?}", a.status)),
                Cell::from(format!("{}/{}", a.kind.as_key_segment(), a.name)),
                Cell::from(a.count.to_string()),
                Cell::from(match &a.acknowledged {
                    Some(ack) => ack.by.clone(),
                    None => "-".to_owned(),
                }),
                Cell::from(a.description.as_str()),
            ]
        })
        .collect();
    printer.raw(&table(
        &[
            "ID",
            "SEVERITY",
            "STATUS",
            "RESOURCE",
            "COUNT",
            "ACKED-BY",
            "DESCRIPTION",
        ],
        &rows,
    ));
    Ok(())
}
