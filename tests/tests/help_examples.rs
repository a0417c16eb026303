//! Every example of `smctl --help` runs, in order, against a real daemon:
//! the lines are read from the help text itself and run with bash in a
//! temporary directory, with smctl on `PATH` and `SMCTL_SERVER` set.
//! A line marked `# exit 1` must exit with 1; one marked `# until Ctrl-C`
//! must still run after a second and end with 0 on SIGINT.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Daemon, bins, interrupt, node_report_yaml, run, smctl_at};

/// The example lines of `smctl --help`, in order.
fn examples() -> Vec<String> {
    let help = smctl_at("http://127.0.0.1:9", &["--help"]).ok();
    let examples: Vec<String> = help
        .split_once("Examples:\n")
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.trim().to_owned())
        .collect();
    assert!(
        examples.len() >= 10 && examples.iter().all(|l| l.contains("smctl ")),
        "the help's examples: {examples:?}\n{help}"
    );
    assert_eq!(
        examples.join("\n"),
        smctl::cli::EXAMPLES
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n")
    );
    examples
}

fn bash(line: &str, dir: &std::path::Path, server: &str) -> Command {
    let path = format!(
        "{}:{}",
        bins().dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .args(["-c", line])
        .current_dir(dir)
        .env("PATH", path)
        .env("HOME", dir)
        .env("SMCTL_SERVER", server)
        .env("NO_COLOR", "1")
        .env_remove("SMCTL_OUTPUT")
        .stdin(Stdio::null());
    command
}

#[test]
fn every_example_of_the_help_runs_against_a_daemon() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sm = Daemon::start(&dir.path().join("data"), &[]);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    std::fs::write(work.join("node-report.yaml"), node_report_yaml()).expect("write");

    for line in examples() {
        if line.contains("# until Ctrl-C") {
            let mut command = bash(&format!("exec {line}"), &work, &sm.url());
            let mut child = command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("bash starts");
            std::thread::sleep(Duration::from_secs(1));
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "`{line}` ended before Ctrl-C"
            );
            interrupt(child.id());
            let started = Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    break status;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "`{line}` ignores Ctrl-C"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            assert_eq!(status.code(), Some(0), "`{line}` after Ctrl-C");
            continue;
        }
        let expected = if line.contains("# exit 1") { 1 } else { 0 };
        run(bash(&line, &work, &sm.url()), vec![line.clone()]).exits(expected);
    }
    let diagram = std::fs::read_to_string(work.join("scenario.mmd")).expect("scenario.mmd written");
    assert!(diagram.starts_with("stateDiagram-v2\n"), "{diagram}");
}
