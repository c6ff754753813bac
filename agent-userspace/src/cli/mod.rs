//! Command line: one module per subcommand group.

mod daemon;

use std::process::ExitCode;

#[derive(Debug, clap::Parser)]
#[command(
    name = "leash",
    version,
    about = "Per-task exec and network grants for AI agents, enforced in the kernel"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Load and attach the kernel programs and report their decisions (root).
    Daemon(daemon::DaemonArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Daemon(args) => daemon::run(&args),
    }
}
