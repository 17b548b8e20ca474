//! The `mlv` command line: parses arguments and dispatches to one module per command.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let result = cli::run(args);
    for note in mlv::notes::drain() {
        eprintln!("note: {note}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader (e.g. `head`) has all it wanted.
        Err(e) if cli::is_closed_stdout(&e) => ExitCode::SUCCESS,
        Err(_) if cli::interrupted() => {
            eprintln!("error: interrupted; nothing half-written was kept");
            ExitCode::from(130)
        }
        Err(e) => {
            cli::report_error(&e);
            ExitCode::FAILURE
        }
    }
}
