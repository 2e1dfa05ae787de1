//! `peercam`: parse the command line, run, exit. Everything else is in the library
//! ([`peercam::cli::run`]).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    peercam::cli::run(peercam::cli::Cli::parse())
}
