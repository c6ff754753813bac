//! Command line: one module per subcommand group.

mod approve;
mod audit;
mod compat_filter;
mod daemon;
mod events;
mod grant;
mod output;
mod policy;
mod profile;
mod profile_cmd;
mod run;
mod run_command;
mod run_report;
mod sandbox;
mod status;
mod suggest;
mod task;
mod token;

use std::{future::Future, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use leash::client::Client;

#[derive(Debug, clap::Parser)]
#[command(
    name = "leash",
    version,
    about = "Per-task exec and network grants for AI agents, enforced in the kernel"
)]
pub(crate) struct Cli {
    // The id stays `socket`: a subcommand with its own `socket` arg (`leash daemon
    // --socket`) then keeps it, and clap does not propagate this one there.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help = "The daemon's API socket, for the client commands \
                [default: $LEASH_SOCKET, else /run/leash/leash.sock]"
    )]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Load and attach the kernel programs and report their decisions (root).
    Daemon(daemon::DaemonArgs),
    /// Run a command inside a task: create (or join) it, tag this process, exec CMD.
    ///
    /// A task this creates ends when CMD exits (`end_when: command_exits`): processes
    /// CMD leaves behind lose every grant then (and are killed under
    /// `tasks.kill_on_end`). A task joined with --task lives on after CMD exits.
    Run(run::RunArgs),
    /// Create, list, show and end tasks.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Add or revoke grants of a task.
    #[command(subcommand)]
    Grant(grant::GrantCommand),
    /// Show the audit events: every decision and task change.
    Events(events::EventsArgs),
    /// The grants that allow what a task was refused (or, audited, would have been).
    Suggest(suggest::SuggestArgs),
    /// From inside a task: print an identity token (JWT-SVID) for it, for a service to
    /// verify which task calls.
    Token(token::TokenArgs),
    /// Show what the daemon enforces with: backend, programs, maps, counters.
    Status(status::StatusArgs),
    /// Approve a grant pending approval: the kernel allows it from now on (approvers only).
    Approve(approve::DecideArgs),
    /// Reject a grant pending approval (approvers only).
    Deny(approve::DecideArgs),
    /// List the profiles (named bundles of grants for common tools) and show one.
    #[command(subcommand)]
    Profile(profile_cmd::ProfileCommand),
    /// Check a policy file and explain its decisions (offline).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Check the audit log's hash chain and signed heads (offline).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// An error as printed: its chain of causes, `: `-separated, leaving out a cause whose
/// text the message before it already quotes (typed errors keep their source and also
/// name it). It may quote a request or the daemon's answer, so control characters are
/// escaped as in every other human output.
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    let mut last = text.clone();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !last.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        last = cause;
    }
    output::clean(&text).into_owned()
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = Client::from_env(cli.socket);
    let result = match cli.command {
        Command::Daemon(args) => daemon::run(&args),
        Command::Run(args) => run::run(&client, &args),
        Command::Task(cmd) => task::run(&client, cmd),
        Command::Grant(cmd) => grant::run(&client, cmd),
        Command::Events(args) => events::run(&client, &args),
        Command::Suggest(args) => suggest::run(&client, &args),
        Command::Token(args) => token::run(&client, &args),
        Command::Profile(cmd) => profile_cmd::run(&cmd),
        Command::Status(args) => status::run(&client, &args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Approve(args) => approve::run(&client, &args, true),
        Command::Deny(args) => approve::run(&client, &args, false),
    };
    match result {
        // stdout closed by its reader (`leash events -f | head`): not an error.
        Err(e) if output::is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        other => other,
    }
}

/// Runs one client future on a current-thread runtime.
fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn error_text_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read {path}: {source}")]
        struct Quoting {
            path: &'static str,
            #[source]
            source: std::io::Error,
        }
        let io = || std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(Quoting {
            path: "/x",
            source: io(),
        })
        .context("loading");
        assert_eq!(error_text(&e), "loading: cannot read /x: disk on fire");
        let e = anyhow::Error::new(io()).context("saving");
        assert_eq!(error_text(&e), "saving: disk on fire");
        let e = anyhow::anyhow!("line\nbreak");
        assert_eq!(error_text(&e), "line\\nbreak");
    }

    #[test]
    fn socket_is_global() {
        for argv in [
            ["leash", "--socket", "/s.sock", "events"],
            ["leash", "events", "--socket", "/s.sock"],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            assert_eq!(cli.socket, Some(PathBuf::from("/s.sock")));
        }
        let cli = Cli::try_parse_from(["leash", "daemon"]).unwrap();
        assert!(matches!(cli.command, Command::Daemon(_)));
    }
}
