//! `leash`: the daemon and (in later issues) its CLI.

mod cli;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leash: {}", cli::error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
