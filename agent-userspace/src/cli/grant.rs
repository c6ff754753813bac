//! `leash grant add|revoke`: change a running task's grants.

use std::process::ExitCode;

use leash::{client::Client, protocol::AddGrant};

use super::{output, task};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum GrantCommand {
    /// Add one grant to a task and print its id.
    Add(AddArgs),
    /// Revoke one grant of a task.
    Revoke {
        /// Task id.
        id: String,
        /// Grant id, as `leash grant add` or `leash task show` printed it (g1, g2, ...).
        grant_id: String,
    },
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("grant").required(true).args(["exec", "connect", "file"]))]
pub(crate) struct AddArgs {
    /// Task id.
    pub id: String,
    /// Allow executing this file (absolute path; `DIR/` allows every file directly inside;
    /// `DIR/**` any file below DIR, also those written later).
    #[arg(long, value_name = "PATH")]
    pub exec: Option<String>,
    /// Allow connecting to ADDR[/PREFIX]:PORTS[/PROTO].
    #[arg(long, value_name = "SPEC")]
    pub connect: Option<String>,
    /// A file grant, `read:PATH` or `write:PATH`: refused on a running task (409), since
    /// a Landlock domain cannot be widened; give file grants when creating the task.
    #[arg(long, value_name = "SPEC")]
    pub file: Option<String>,
    /// Lifetime of this grant, e.g. 90s, 10m, 1h (never beyond the task's).
    #[arg(long, value_name = "DURATION", value_parser = task::parse_ttl, allow_hyphen_values = true)]
    pub ttl: Option<u64>,
}

impl AddArgs {
    fn to_request(&self) -> AddGrant {
        AddGrant {
            exec: self.exec.as_deref().map(task::absolute),
            connect: self.connect.clone(),
            file: self.file.clone(),
            ttl_seconds: self.ttl,
        }
    }
}

pub(crate) fn run(client: &Client, cmd: GrantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GrantCommand::Add(args) => {
            let added = super::block_on(client.add_grant(&args.id, &args.to_request()))??;
            if added.pending {
                output::print(&format!(
                    "{} (pending approval: `leash approve {} {}`)",
                    added.grant_id, args.id, added.grant_id
                ))?;
            } else {
                output::print(&added.grant_id)?;
            }
        }
        GrantCommand::Revoke { id, grant_id } => {
            super::block_on(client.revoke_grant(&id, &grant_id))??;
            output::print(&format!("revoked {grant_id}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn add(args: &[&str]) -> Result<AddArgs, clap::Error> {
        match Cli::try_parse_from(["leash", "grant", "add"].iter().chain(args))?.command {
            Command::Grant(GrantCommand::Add(a)) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_grant_add() {
        let a = add(&["00ab", "--exec", "/usr/bin/git", "--ttl", "10m"]).unwrap();
        assert_eq!(
            a.to_request(),
            AddGrant {
                exec: Some("/usr/bin/git".into()),
                connect: None,
                file: None,
                ttl_seconds: Some(600),
            }
        );
        let a = add(&["00ab", "--connect", "10.0.0.0/8:443/tcp"]).unwrap();
        assert_eq!(a.id, "00ab");
        assert_eq!(
            a.to_request().connect.as_deref(),
            Some("10.0.0.0/8:443/tcp")
        );
        // Exactly one of --exec and --connect.
        assert!(add(&["00ab"]).is_err());
        assert!(add(&["00ab", "--exec", "/bin/ls", "--connect", "1.2.3.4:80"]).is_err());
        let err = add(&["00ab", "--exec", "/bin/ls", "--ttl", "a while"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ttl"), "{err}");
    }

    #[test]
    fn parses_grant_revoke() {
        let cli = Cli::try_parse_from(["leash", "grant", "revoke", "00ab", "g2"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Grant(GrantCommand::Revoke { ref id, ref grant_id }) if id == "00ab" && grant_id == "g2"
        ));
        assert!(Cli::try_parse_from(["leash", "grant", "revoke", "00ab"]).is_err());
    }
}
