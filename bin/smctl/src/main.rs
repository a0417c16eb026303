//! smctl: operate a PICCOLO StateManager from a shell (`smctl --help`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use smctl::cli::Cli;
use smctl::{Exit, Failure};

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2 (0 for --help).
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            report(&Failure::usage(format!(
                "cannot start the async runtime: {error}"
            )));
            return Exit::Usage.into();
        }
    };
    match runtime.block_on(smctl::commands::run(cli)) {
        Ok(()) => Exit::Ok.into(),
        Err(failure) => {
            report(&failure);
            failure.exit.into()
        }
    }
}

/// Prints the failure on stderr, its code in red on a terminal.
fn report(failure: &Failure) {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let line = failure.line();
    if !no_color && std::io::stderr().is_terminal() {
        eprintln!("\x1b[31m{line}\x1b[0m");
    } else {
        eprintln!("{line}");
    }
}
