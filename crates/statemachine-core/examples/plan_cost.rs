//! Plans W2's 200-container report N times, for counting instructions with
//! callgrind (deterministic, unlike wall-clock time on a shared machine):
//!
//! ```sh
//! cargo build --release -p statemachine-core --example plan_cost
//! for n in 10 110; do valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \
//!     target/release/examples/plan_cost $n flip; done
//! ```
//!
//! Instructions per plan = (total at 110 - total at 10) / 100, which cancels
//! the set-up. `flip` plans a report where half the models die; `quiet` an
//! unchanged one (W3). A third argument `derived` derives the containers'
//! states before planning, as the daemon's decoder does.

use std::hint::black_box;
use std::process::ExitCode;

use statemachine_core::{Input, plan};

#[path = "../benches/support/w2.rs"]
mod w2;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(Ok(n)) = args.next().map(|a| a.parse::<usize>()) else {
        eprintln!("usage: plan_cost N [flip|quiet] [derived]");
        return ExitCode::from(2);
    };
    let quiet = match args.next().as_deref() {
        None | Some("flip") => false,
        Some("quiet") => true,
        Some(other) => {
            eprintln!("plan_cost: unknown mode '{other}'; use flip or quiet");
            return ExitCode::from(2);
        }
    };
    // `derived`: the containers' states derived beforehand, as the daemon's
    // decoder hands reports to the engine.
    let derived = match args.next().as_deref() {
        None => false,
        Some("derived") => true,
        Some(other) => {
            eprintln!("plan_cost: unknown option '{other}'; use derived");
            return ExitCode::from(2);
        }
    };
    let mut snapshot = w2::w2_snapshot();
    let running = w2::w2_report(|_, _| ("running", "0"));
    let first = plan(&snapshot, Input::NodeReport(&running), 0);
    snapshot.apply(&first);
    snapshot.committed(&first, 1);
    let flipped = w2::w2_report(|_, m| {
        if m % 2 == 0 {
            ("exited", "137")
        } else {
            ("running", "0")
        }
    });
    let (mut running, mut flipped) = (running, flipped);
    if derived {
        for c in running
            .containers
            .iter_mut()
            .chain(flipped.containers.iter_mut())
        {
            c.derive_state();
        }
    }
    let report = if quiet { &running } else { &flipped };
    let mut writes = 0;
    for _ in 0..n {
        writes += black_box(plan(
            black_box(&snapshot),
            Input::NodeReport(black_box(report)),
            1,
        ))
        .changes
        .len();
    }
    println!("{n} plans, {writes} state writes");
    ExitCode::SUCCESS
}
