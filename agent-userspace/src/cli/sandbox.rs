//! The Landlock domain `leash run` applies to itself just before it execs the command
//! (docs/grants.md, "files"): built from the task's file rules, the workspace (the
//! directory `leash run` was started in, or `--workspace`) and a private tmp directory
//! (`TMPDIR`). Built before the process joins the task, applied after, so that only the
//! exec can fail once the process is tagged.

use std::{
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use leash::{
    files::{Domain, Enforced, Extra, check_workspace},
    protocol::{FileMode, FileRules, GrantKind, Task},
};

/// A domain ready to apply, and the tmp directory made for it.
pub(crate) struct Prepared {
    domain: Domain,
    pub tmpdir: Option<PathBuf>,
}

impl Prepared {
    /// Restricts this (single-threaded) process for good.
    pub(crate) fn enforce(self) -> Result<Enforced, leash::files::DomainError> {
        self.domain.enforce()
    }
}

/// Builds the task's domain. `workspace`: `--workspace`, else the current directory.
pub(crate) fn prepare(task: &Task, workspace: Option<&Path>) -> anyhow::Result<Prepared> {
    // A task recorded by a daemon without file rules: open, as it was then.
    let rules = task.files.clone().unwrap_or(FileRules {
        mode: FileMode::Open,
        ..FileRules::default()
    });
    let mut extra = Extra {
        exec: task
            .grants
            .iter()
            .filter(|g| g.kind == GrantKind::Exec)
            .map(|g| g.spec.clone())
            .collect(),
        abstract_unix: task
            .grants
            .iter()
            .any(|g| g.kind == GrantKind::Connect && g.spec.starts_with("unix:@")),
        ..Extra::default()
    };
    let mut tmpdir = None;
    if rules.mode != FileMode::Open {
        let dir = match workspace {
            Some(dir) => dir.to_owned(),
            None => std::env::current_dir().context("cannot read the current directory")?,
        };
        let home = std::env::var_os("HOME").map(PathBuf::from);
        extra.workspace = Some(check_workspace(&dir, home.as_deref())?);
        let tmp = make_tmpdir(&task.id)?;
        extra.tmpdir = Some(tmp.clone());
        tmpdir = Some(tmp);
    }
    let domain = Domain::prepare(&rules, &extra)
        .with_context(|| format!("cannot apply the file rules of task {}", task.id))?;
    Ok(Prepared { domain, tmpdir })
}

/// A new directory `leash-<task>-<pid>` in the system tmp directory, mode 0700. It is
/// created, never reused: one that exists already is an error. The daemon removes it
/// when the task ends (when its own tmp directory is the same).
fn make_tmpdir(task: &str) -> anyhow::Result<PathBuf> {
    let dir = leash::files::tmpdir_for(task, std::process::id());
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create the task's tmp directory {}", dir.display()))?;
    std::fs::canonicalize(&dir).context("cannot resolve the task's tmp directory")
}
