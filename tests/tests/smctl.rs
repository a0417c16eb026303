//! smctl against the real daemon over real gRPC: every subcommand, the
//! output formats and the exit codes scripts test (0 done, 1 refused,
//! 2 usage, 3 unreachable or timed out).

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use statemachine_core::ResourceKind;
use support::{Daemon, interrupt, node_report_yaml, smctl_at, smctl_command};

fn daemon() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let daemon = Daemon::start(&dir.path().join("data"), &[]);
    (dir, daemon)
}

#[test]
fn set_get_list_and_history_follow_a_scenario_and_a_refused_transition_exits_1() {
    let (_dir, sm) = daemon();
    let out = sm
        .smctl(&[
            "set",
            "scenario",
            "parking",
            "waiting",
            "--from",
            "idle",
            "--source",
            "FilterGateway",
        ])
        .ok();
    assert!(
        out.contains("Scenario 'parking' Idle -> Waiting; condition registered"),
        "{out}"
    );

    let refused = sm
        .smctl(&["set", "scenario", "parking", "completed", "-o", "json"])
        .exits(1);
    assert!(
        refused.stderr.contains(
            "INVALID_STATE_TRANSITION: scenario transition Waiting -> Completed is not allowed (allowed from 'Waiting': Satisfied)"
        ),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.json()["code"], "INVALID_STATE_TRANSITION");

    let view = sm
        .smctl(&["get", "scenario", "parking", "-o", "json"])
        .exits(0)
        .json();
    assert_eq!(view["state"], "Waiting");
    assert_eq!(view["kind"], "scenario");
    assert_eq!(view["healthy"], true);

    let table = sm.smctl(&["get", "scenario", "parking"]).ok();
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("KIND      NAME     STATE    GENERATION"),
        "{table}"
    );
    let row = lines.next().unwrap_or_default();
    assert!(row.starts_with("scenario  parking  Waiting  "), "{table}");
    assert!(
        !table.contains('\x1b'),
        "no colours when stdout is not a terminal"
    );

    let listed = sm
        .smctl(&["list", "scenarios", "--state", "WAITING", "-o", "json"])
        .exits(0)
        .json();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["name"], "parking");
    let none = sm
        .smctl(&["list", "scenario", "--state", "completed", "-o", "name"])
        .ok();
    assert_eq!(none, "");
    let yaml = sm.smctl(&["list", "scenario", "-o", "yaml"]).ok();
    assert!(
        yaml.contains("- kind: scenario\n  name: parking\n  state: Waiting\n"),
        "{yaml}"
    );

    let history = sm
        .smctl(&["history", "scenario", "parking", "-o", "json"])
        .exits(0)
        .json();
    let entries = history.as_array().expect("a list of entries");
    assert_eq!(entries.len(), 1, "{history}");
    assert_eq!(entries[0]["from"], "Idle");
    assert_eq!(entries[0]["to"], "Waiting");
    assert_eq!(entries[0]["source"], "FilterGateway");
    let table = sm
        .smctl(&["history", "scenario", "parking", "--limit", "5"])
        .ok();
    assert!(table.starts_with("AT  "), "{table}");
    assert!(
        table.contains("  Idle  Waiting  FilterGateway  requested  "),
        "{table}"
    );
}

#[test]
fn states_survive_a_restart_of_the_daemon() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let first = Daemon::start(&data, &[]);
    first.smctl(&["set", "scenario", "parking", "waiting"]).ok();
    drop(first);
    let second = Daemon::start(&data, &[]);
    let view = second
        .smctl(&["get", "scenario", "parking", "-o", "json"])
        .exits(0)
        .json();
    assert_eq!(view["state"], "Waiting");
    second
        .smctl(&[
            "set",
            "scenario",
            "parking",
            "satisfied",
            "--from",
            "waiting",
        ])
        .ok();
    let history = second
        .smctl(&["history", "scenario", "parking", "-o", "name"])
        .ok();
    assert_eq!(history.lines().count(), 2, "{history}");
}

#[test]
fn a_report_file_derives_states_and_recovery_and_alerts_follow_it() {
    let (dir, sm) = daemon();
    let file = dir.path().join("node-report.yaml");
    std::fs::write(&file, node_report_yaml()).expect("write the report");
    let out = sm.smctl(&["report", &file.display().to_string()]).ok();
    assert_eq!(out, "node 'hpc-1': 1 containers, 2 state changes\n");

    let models = sm.smctl(&["list", "model", "-o", "json"]).exits(0).json();
    assert_eq!(models["items"][0]["name"], "nav");
    assert_eq!(models["items"][0]["state"], "Dead");

    // The same report as JSON, as grpcurl writes it, is accepted too.
    let json = dir.path().join("report.json");
    std::fs::write(
        &json,
        r#"{"nodeName": "hpc-1", "containers": [{"id": "c1", "names": ["/nav-main"],
            "state": {"Status": "exited", "ExitCode": "137"}, "annotation": {"model": "nav"}}]}"#,
    )
    .expect("write the JSON report");
    let out = sm
        .smctl(&["report", &json.display().to_string(), "-o", "json"])
        .exits(0);
    assert_eq!(out.json()["node"], "hpc-1");

    let opened = sm
        .smctl(&[
            "recovery", "trigger", "model", "nav", "--action", "notify", "--reason", "by hand",
            "-o", "json",
        ])
        .exits(0)
        .json();
    assert_eq!(opened["incident"]["issue"], "Manual");
    assert_eq!(opened["ladder"][0], "Notify");
    let id = opened["incident"]["id"]
        .as_str()
        .expect("an incident id")
        .to_owned();

    let status = sm.smctl(&["recovery", "status", "--id", &id]).ok();
    assert!(status.contains(&id), "{status}");
    assert!(status.contains("model/nav"), "{status}");

    // The Notify rung raises an alert.
    let started = Instant::now();
    let alert = loop {
        let ids = sm.smctl(&["alerts", "list", "-o", "name"]).ok();
        if let Some(id) = ids.lines().next() {
            break id.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no alert after the Notify rung"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let table = sm
        .smctl(&["alerts", "list", "--severity", "warning", "--kind", "model"])
        .ok();
    assert!(
        table.contains(&alert) && table.contains("Active"),
        "{table}"
    );
    let acked = sm
        .smctl(&[
            "alerts",
            "ack",
            &alert,
            "--by",
            "operator",
            "-m",
            "looking into it",
            "-o",
            "json",
        ])
        .exits(0)
        .json();
    assert_eq!(acked["status"], "Acknowledged");
    assert_eq!(acked["acknowledged"]["by"], "operator");

    let aborted = sm
        .smctl(&[
            "recovery",
            "abort",
            "model",
            "nav",
            "--reason",
            "done by hand",
            "-o",
            "json",
        ])
        .exits(0)
        .json();
    assert_eq!(aborted["incident"]["phase"], "Aborted");

    // Refusals name the daemon's code.
    let none = sm
        .smctl(&["recovery", "status", "package", "nope"])
        .exits(1);
    assert!(
        none.stderr.contains("RESOURCE_NOT_FOUND"),
        "{}",
        none.stderr
    );
    let unknown = sm
        .smctl(&["alerts", "ack", "no-such-alert", "--by", "me"])
        .exits(1);
    assert!(
        unknown.stderr.contains("no alert 'no-such-alert'"),
        "{}",
        unknown.stderr
    );
    let bad = sm
        .smctl(&["recovery", "trigger", "model", "nav", "--action", "reboot"])
        .exits(2);
    assert!(
        bad.stderr.contains("unknown recovery action 'reboot'"),
        "{}",
        bad.stderr
    );
}

#[test]
fn watch_prints_committed_transitions_and_stops_on_ctrl_c() {
    let (_dir, sm) = daemon();
    // A table watch prints its header once subscribed: that says when.
    let mut ready = smctl_command(&sm.url());
    ready
        .args(["watch", "scenario", "parking"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut table = ready.spawn().expect("smctl watch starts");
    let mut lines = BufReader::new(table.stdout.take().expect("stdout")).lines();
    let header = lines.next().expect("a header line").expect("utf-8");
    assert!(header.starts_with("AT  "), "{header}");
    sm.smctl(&["set", "scenario", "other", "waiting"]).ok();
    sm.smctl(&["set", "scenario", "parking", "waiting"]).ok();
    let row = lines.next().expect("an event line").expect("utf-8");
    assert!(
        row.contains("StateChange") && row.contains("parking"),
        "{row}"
    );
    assert!(row.contains("Idle") && row.contains("Waiting"), "{row}");

    // A JSON watch prints nothing until its first event, so new scenarios
    // are set until it has seen one.
    let mut command = smctl_command(&sm.url());
    command
        .args(["watch", "scenarios", "--count", "1", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut json = command.spawn().expect("smctl watch starts");
    let started = Instant::now();
    let mut n = 0;
    while json.try_wait().expect("try_wait").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the JSON watch saw no event"
        );
        n += 1;
        sm.smctl(&["set", "scenario", &format!("s{n}"), "waiting"])
            .ok();
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = json.wait_with_output().expect("the JSON watch's output");
    assert_eq!(output.status.code(), Some(0));
    let event: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON event on one line");
    assert_eq!(event["event"], "StateChange");
    assert_eq!(event["kind"], "scenario");
    assert!(
        event["name"].as_str().is_some_and(|n| n.starts_with('s')),
        "{event}"
    );
    assert_eq!(event["to"], "Waiting");

    interrupt(table.id());
    let status = table.wait().expect("the table watch ends on SIGINT");
    assert_eq!(status.code(), Some(0), "Ctrl-C ends watch with 0");
}

#[test]
fn diagrams_and_completions_need_no_daemon() {
    // Nothing listens here: neither command connects.
    for (kind, core) in [
        ("scenario", ResourceKind::Scenario),
        ("package", ResourceKind::Package),
        ("model", ResourceKind::Model),
        ("container", ResourceKind::Container),
    ] {
        let out = smctl_at("http://127.0.0.1:9", &["diagram", kind]).ok();
        assert_eq!(out, smctl::diagram::mermaid(core), "smctl diagram {kind}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = smctl_at("http://127.0.0.1:9", &["completions", shell]).ok();
        assert!(
            out.contains("smctl") && out.contains("recovery"),
            "{shell}: {out}"
        );
    }
}

#[test]
fn exit_code_1_names_the_daemons_code() {
    let (_dir, sm) = daemon();
    let missing = sm.smctl(&["get", "package", "nope"]).exits(1);
    assert_eq!(
        missing.stderr.trim(),
        "smctl: RESOURCE_NOT_FOUND: Package 'nope' not found"
    );
    let bad_state = sm.smctl(&["list", "model", "--state", "sleeping"]).exits(1);
    assert!(
        bad_state.stderr.contains("INVALID_REQUEST") && bad_state.stderr.contains("sleeping"),
        "{}",
        bad_state.stderr
    );
    let bad_name = sm
        .smctl(&["set", "scenario", "bad/name", "waiting"])
        .exits(1);
    assert!(
        bad_name.stderr.contains("INVALID_REQUEST"),
        "{}",
        bad_name.stderr
    );
    let direct = sm.smctl(&["set", "package", "p", "running"]).exits(1);
    assert!(
        direct.stderr.contains("RESOURCE_NOT_FOUND"),
        "{}",
        direct.stderr
    );
}

#[test]
fn exit_code_2_is_a_usage_error_that_names_the_problem() {
    let server = "http://127.0.0.1:9";
    let unknown = smctl_at(server, &["frobnicate"]).exits(2);
    assert!(
        unknown
            .stderr
            .contains("unrecognized subcommand 'frobnicate'"),
        "{}",
        unknown.stderr
    );
    let kind = smctl_at(server, &["get", "pod", "x"]).exits(2);
    assert!(
        kind.stderr.contains("invalid value 'pod'"),
        "{}",
        kind.stderr
    );
    let timeout = smctl_at(server, &["--timeout", "soon", "list", "model"]).exits(2);
    assert!(
        timeout.stderr.contains("'soon' is not a duration"),
        "{}",
        timeout.stderr
    );
    let missing = smctl_at(server, &["report", "/nonexistent/report.yaml"]).exits(2);
    assert!(
        missing
            .stderr
            .contains("cannot read report file '/nonexistent/report.yaml'"),
        "{}",
        missing.stderr
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "node_name: n\ncontainer: []\n").expect("write");
    let typo = smctl_at(server, &["report", &typo.display().to_string()]).exits(2);
    assert!(
        typo.stderr.contains("unknown field `container`"),
        "{}",
        typo.stderr
    );
    let url = smctl_at("not a url", &["list", "model"]).exits(2);
    assert!(
        url.stderr
            .contains("invalid StateManager endpoint 'not a url'"),
        "{}",
        url.stderr
    );
    let tls = smctl_at("https://127.0.0.1:9", &["list", "model"]).exits(2);
    assert!(tls.stderr.contains("TLS settings"), "{}", tls.stderr);
    let help = smctl_at(server, &["--help"]).ok();
    assert!(
        help.contains("Exit codes:") && help.contains("Examples:"),
        "{help}"
    );
}

#[test]
fn exit_code_3_when_nothing_listens_or_nothing_answers_in_time() {
    // A port nothing listens on.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let refused = smctl_at(&format!("http://127.0.0.1:{port}"), &["list", "model"]).exits(3);
    assert!(
        refused
            .stderr
            .contains("cannot connect to the StateManager"),
        "{}",
        refused.stderr
    );

    // A port that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("address"));
    let started = Instant::now();
    let hung = smctl_at(&url, &["--timeout", "700ms", "get", "scenario", "s"]).exits(3);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the timeout held: {:?}",
        started.elapsed()
    );
    assert!(hung.stderr.contains("700ms"), "{}", hung.stderr);
    drop(silent);
}

#[test]
fn over_tls_smctl_verifies_the_daemon_with_ca() {
    use transport_grpc::testing::pki::{Ca, Files};
    let ca = Ca::new("smctl test CA");
    let files = Files::new();
    let server = files.server(&ca, None);
    let ca_file = files.write("ca.pem", &ca.pem);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cert = server.cert.display().to_string();
    let key = server.key.display().to_string();
    let sm = Daemon::start(
        &dir.path().join("data"),
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let url = format!("https://localhost:{}", sm.address.port());
    let ca_arg = ca_file.display().to_string();
    smctl_at(&url, &["--ca", &ca_arg, "set", "scenario", "s", "waiting"]).ok();
    let mut command = smctl_command(&url);
    command
        .env("SMCTL_CA", &ca_file)
        .env("SMCTL_DOMAIN", "localhost")
        .args(["get", "scenario", "s", "-o", "json"]);
    let view = support::run(command, vec!["get (SMCTL_CA)".into()])
        .exits(0)
        .json();
    assert_eq!(view["state"], "Waiting");
    // Another CA does not verify the daemon: no connection (exit 3).
    let other = Ca::new("another CA");
    let other_file = files.write("other.pem", &other.pem);
    let out = smctl_at(
        &url,
        &[
            "--ca",
            &other_file.display().to_string(),
            "get",
            "scenario",
            "s",
        ],
    )
    .exits(3);
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
    // TLS files with a plaintext server are a usage error.
    let out = smctl_at(&sm.url(), &["--ca", &ca_arg, "get", "scenario", "s"]).exits(2);
    assert!(out.stderr.contains("https://"), "{}", out.stderr);
}
