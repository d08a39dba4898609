//! `classmod`: the host CLI. A thin layer over `classmod_host` and `classmod_runtime`: parse
//! flags, call the library, print tables or JSON. Errors a user can cause print one line on
//! stderr and exit with code 2.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
