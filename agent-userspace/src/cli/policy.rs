//! `leash policy check|explain|schema`: work on a policy file offline, without a daemon.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use leash::{
    policy::{GrantSpec, Policy, SCHEMA, Verdict},
    protocol::Mode,
};

use super::{output, task};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate a policy file (YAML, compiled to Cedar and checked against the schema).
    Check {
        file: PathBuf,
        /// Also print the generated Cedar policies.
        #[arg(long)]
        cedar: bool,
    },
    /// Say whether a grant or a task would be allowed for an agent, and why.
    Explain(ExplainArgs),
    /// Print leash's Cedar schema (what `cedar:` policies may refer to).
    Schema,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExplainArgs {
    /// The policy file.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Agent name.
    #[arg(long)]
    pub agent: String,
    /// Grants to evaluate: exec:PATH, connect:SPEC, unix:PATH, read:PATH or write:PATH
    /// (repeatable).
    #[arg(long = "grant", value_name = "KIND:SPEC")]
    pub grants: Vec<GrantSpec>,
    /// Also evaluate starting a task with this TTL (e.g. 30m).
    #[arg(long, value_parser = task::parse_ttl, allow_hyphen_values = true)]
    pub ttl: Option<u64>,
    /// Mode of that task.
    #[arg(long, value_enum, default_value = "enforce")]
    pub mode: ModeArg,
    /// The task states an intent.
    #[arg(long)]
    pub intent: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum ModeArg {
    Enforce,
    Audit,
}

pub(crate) fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { file, cedar } => {
            let policy = Policy::load(&file)?;
            if cedar {
                output::print(&policy.cedar_text())?;
            }
            for w in policy.warnings() {
                eprintln!("warning: {w}");
            }
            output::print(&format!(
                "{}: ok ({} rules)",
                file.display(),
                policy.rules.len()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Schema => {
            output::print(SCHEMA.trim())?;
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Explain(args) => explain(&args),
    }
}

fn explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(&args.policy)?;
    let rule = policy.rule_for(&args.agent).map_or_else(
        || "no rule".to_owned(),
        |r| format!("rule {:?}", r.file.name),
    );
    output::print(&format!("agent {:?}: {rule}", args.agent))?;
    let mut all_allowed = true;
    let mut line = |what: String, v: Verdict| -> anyhow::Result<()> {
        let text = match v {
            Verdict::Allow => format!("{what}: allowed"),
            Verdict::Pending => format!("{what}: allowed once approved (pending until then)"),
            Verdict::Deny(why) => {
                all_allowed = false;
                format!("{what}: refused: {why}")
            }
        };
        output::print(&text).context("cannot print")
    };
    if let Some(ttl) = args.ttl {
        let mode = match args.mode {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        };
        let v = policy.check_task(&args.agent, Duration::from_secs(ttl), mode, args.intent);
        line(format!("task (ttl {ttl}s)"), v)?;
    }
    for g in &args.grants {
        line(g.to_string(), policy.check_grant(&args.agent, g))?;
    }
    Ok(if all_allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
