//! `leash audit verify`: checks the audit log's hash chain and signed heads offline
//! (docs/audit.md). It reads the files and the daemon's public key; no daemon needed.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use leash::{
    audit_chain::{self, HEAD_FILE, HeadFile, PUB_FILE},
    config::Config,
};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Check that no record of the audit log was edited, removed or reordered, and that
    /// its tail was not cut after the last signed head. Exits 1 if one was.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The log (its rotated files `FILE.N` ... `FILE.1` are read first)
    /// [default: the config's `audit_log`].
    file: Option<PathBuf>,
    /// The daemon's config, for the default log, key and head paths.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The public key (hex) [default: `state_dir/audit-key.pub`].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The last signed head [default: `state_dir/audit.head`].
    #[arg(long, value_name = "FILE")]
    head: Option<PathBuf>,
}

pub(crate) fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify(args) = cmd;
    let config = Config::load(args.config.as_deref()).context("bad configuration")?;
    let path = args.file.unwrap_or(config.audit_log);
    let files = audit_chain::log_files(&path);
    anyhow::ensure!(!files.is_empty(), "no audit log at {}", path.display());
    let key_path = args.key.unwrap_or_else(|| config.state_dir.join(PUB_FILE));
    let key = audit_chain::load_public_key(&key_path).context(
        "without the daemon's public key the signed heads cannot be checked (--key FILE)",
    )?;
    let head_path = args
        .head
        .unwrap_or_else(|| config.state_dir.join(HEAD_FILE));
    let head = match HeadFile::read(&head_path) {
        Ok(h) => Some(h),
        Err(audit_chain::HeadError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            println!(
                "note: no signed head at {}: a cut tail cannot be detected",
                head_path.display()
            );
            None
        }
        Err(e) => return Err(e).context("the last signed head"),
    };
    let report = audit_chain::verify(&files, Some(&key), head.as_ref())
        .with_context(|| format!("cannot read {}", path.display()))?;
    for f in &report.findings {
        println!("TAMPERED {f}");
    }
    let span = match (report.first_seq, report.last_seq) {
        (Some(a), Some(b)) => format!("records {a} to {b}"),
        _ => "no chained record".into(),
    };
    println!(
        "{} file(s), {} chained record(s) ({span}){}{}",
        files.len(),
        report.records,
        if report.unchained > 0 {
            format!(
                ", {} older line(s) before the chain began",
                report.unchained
            )
        } else {
            String::new()
        },
        if report.begins_mid_chain {
            ", the chain begins in a file rotated away"
        } else {
            ""
        },
    );
    match report.last_signed {
        Some(s) => println!(
            "last signed head: record {s}; {} record(s) after it not signed yet",
            report.unsigned_tail
        ),
        None => println!("no signed head verified"),
    }
    if report.findings.is_empty() {
        println!("ok: the chain is intact");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}
