//! smctl's commands that need no daemon, run as the built binary. (Its
//! commands against a daemon are tested in the workspace's `tests/`
//! package; this file also makes cargo build the binary those tests run.)

use std::process::Command;

use statemachine_core::ResourceKind;

fn smctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_smctl"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("smctl runs")
}

#[test]
fn diagrams_print_what_the_library_generates() {
    let kinds = [
        ("scenario", ResourceKind::Scenario),
        ("package", ResourceKind::Package),
        ("model", ResourceKind::Model),
        ("container", ResourceKind::Container),
    ];
    for (name, kind) in kinds {
        let output = smctl(&["diagram", name]);
        assert!(output.status.success(), "{name}: {output:?}");
        let printed = String::from_utf8(output.stdout).expect("UTF-8");
        assert!(printed.contains("stateDiagram-v2"), "{name}: {printed}");
        assert_eq!(
            printed.trim_end(),
            smctl::diagram::mermaid(kind).trim_end(),
            "{name}"
        );
    }
}

#[test]
fn usage_errors_exit_with_2_and_name_the_problem() {
    let output = smctl(&["diagram", "spaceship"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("spaceship"), "{stderr}");
}
