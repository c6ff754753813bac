//! The Landlock domain of a task: built from its [`FileRules`] by the process that is
//! about to become the task's command, then applied to itself ([`Domain::enforce`]).
//! The domain is inherited by every descendant and can never be lifted.
//!
//! The ABI is negotiated best-effort: leash asks for the rights of [`TARGET_ABI`] and the
//! kernel enforces those it has ([`kernel_abi`], [`rights`]). Whatever the file mode,
//! the domain refuses ptrace, `process_vm_*` and `/proc/<pid>/mem` access to processes
//! outside it (every ABI), and, from ABI 6, signals and abstract unix connects to them.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use landlock::{
    ABI, Access as _, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr as _,
    RulesetCreated, RulesetCreatedAttr as _, RulesetError, RulesetStatus, Scope,
};

use super::exclude::{Exclusion, expand};
use crate::protocol::{FileMode, FileRules};

/// The newest ABI leash asks rights of. A newer kernel's rights (ABI 9's unix socket
/// resolution, which would cut tasks off from the daemon's API socket) are not asked for.
const TARGET_ABI: ABI = ABI::V7;

/// What the process applying the domain adds to the task's rules.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// The workspace, writable (`writes`, `restricted`); checked by
    /// [`super::check_workspace`].
    pub workspace: Option<PathBuf>,
    /// The task's private tmp directory, writable.
    pub tmpdir: Option<PathBuf>,
    /// Exec grants: readable and executable in `restricted` mode.
    pub exec: Vec<String>,
    /// Leave abstract unix sockets outside the domain reachable (the task has
    /// `unix:@name` grants, which the scope would break).
    pub abstract_unix: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("cannot build the Landlock domain: {0}")]
    Landlock(#[from] RulesetError),
    #[error("file rule {path}: {source}")]
    Path {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the kernel enforces no Landlock rules (Landlock is not enabled): file mode {0} cannot be kept; use --files open to run without file rules"
    )]
    NotEnforced(FileMode),
}

/// A domain built and ready to apply.
pub struct Domain {
    ruleset: RulesetCreated,
    mode: FileMode,
}

/// What [`Domain::enforce`] got from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enforced {
    /// Every right asked for is enforced (else the kernel's ABI lacks some).
    pub fully: bool,
    pub abi: Option<i32>,
}

impl fmt::Display for Enforced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.fully {
            "fully enforced"
        } else {
            "partly enforced"
        };
        match self.abi {
            Some(abi) => write!(f, "Landlock ABI {abi}, {how}"),
            None => write!(f, "no Landlock, {how}"),
        }
    }
}

impl Domain {
    /// Builds the domain: opens every path (`O_PATH`) now, so a missing granted path is
    /// an error here, before anything is restricted.
    pub fn prepare(rules: &FileRules, extra: &Extra) -> Result<Self, DomainError> {
        let all = AccessFs::from_all(TARGET_ABI);
        let read = AccessFs::from_read(TARGET_ABI);
        let mut scopes: BitFlags<Scope> = Scope::Signal.into();
        if !extra.abstract_unix {
            scopes |= Scope::AbstractUnixSocket;
        }
        // Denials by the command leash run execs (and its descendants) go to the kernel
        // audit log when audit is on (ABI 7); Landlock logs only the same executable
        // otherwise. leash itself does not read them (docs/grants.md, "Not counted").
        let mut ruleset = Ruleset::default()
            .handle_access(all)?
            .scope(scopes)?
            .create()?
            .log_new_exec(true)?;
        let excluded: Vec<Exclusion> = rules
            .exclude
            .iter()
            .filter_map(|e| Exclusion::new(e))
            .collect();
        // (path, rights, must exist, exclusions apply)
        let mut allow: Vec<(&str, BitFlags<AccessFs>, bool, bool)> = Vec::new();
        match rules.mode {
            FileMode::Open => allow.push(("/", all, true, false)),
            FileMode::Writes => allow.push(("/", read, true, false)),
            FileMode::Restricted => {
                allow.extend(
                    rules
                        .base_read
                        .iter()
                        .map(|p| (p.as_str(), read, false, true)),
                );
                allow.extend(rules.read.iter().map(|p| (p.as_str(), read, true, true)));
                allow.extend(extra.exec.iter().map(|p| (p.as_str(), read, true, true)));
            }
        }
        let ws = extra.workspace.as_deref().map(path_str);
        let tmp = extra.tmpdir.as_deref().map(path_str);
        if rules.mode != FileMode::Open {
            allow.extend(
                rules
                    .base_write
                    .iter()
                    .map(|p| (p.as_str(), all, false, true)),
            );
            allow.extend(rules.write.iter().map(|p| (p.as_str(), all, true, true)));
            allow.extend(ws.iter().chain(&tmp).map(|p| (p.as_str(), all, true, true)));
        }
        for (path, access, required, excluding) in allow {
            let canonical = match std::fs::canonicalize(path) {
                Ok(c) => c,
                Err(_) if !required => continue,
                Err(source) => {
                    return Err(DomainError::Path {
                        path: path.to_owned(),
                        source,
                    });
                }
            };
            let paths = if excluding {
                expand(&canonical, &excluded).map_err(|source| DomainError::Path {
                    path: path.to_owned(),
                    source,
                })?
            } else {
                vec![canonical]
            };
            for p in paths {
                let fd = PathFd::new(&p).map_err(|e| DomainError::Path {
                    path: p.display().to_string(),
                    source: std::io::Error::other(e),
                })?;
                // A file takes only file rights; asking for directory rights on it would
                // mark the whole domain "partly enforced" (the crate drops them anyway).
                let rights = if p.is_dir() {
                    access
                } else {
                    access & AccessFs::from_file(TARGET_ABI)
                };
                ruleset = ruleset.add_rule(PathBeneath::new(fd, rights))?;
            }
        }
        Ok(Self {
            ruleset,
            mode: rules.mode,
        })
    }

    /// Restricts this process (and so every process it becomes or starts) for good.
    /// Call it from a single-threaded process: other threads stay unrestricted. A
    /// kernel without Landlock fails a mode with file rules (fail closed); `open` runs.
    pub fn enforce(self) -> Result<Enforced, DomainError> {
        let status = self.ruleset.restrict_self()?;
        let fully = match status.ruleset {
            RulesetStatus::FullyEnforced => true,
            RulesetStatus::PartiallyEnforced => false,
            RulesetStatus::NotEnforced if self.mode == FileMode::Open => false,
            RulesetStatus::NotEnforced => return Err(DomainError::NotEnforced(self.mode)),
        };
        Ok(Enforced {
            fully,
            abi: kernel_abi(),
        })
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// The kernel's Landlock ABI version; `None` when Landlock is not built in or enabled.
pub fn kernel_abi() -> Option<i32> {
    static ABI: OnceLock<Option<i32>> = OnceLock::new();
    *ABI.get_or_init(|| {
        const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
        // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, the call
        // reads and writes no memory; it returns the ABI version or -1.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        (v > 0).then_some(v as i32)
    })
}

/// What a Landlock domain refuses on a kernel of ABI `abi`, as `leash status` says it.
#[must_use]
pub fn rights(abi: Option<i32>) -> Vec<&'static str> {
    let Some(abi) = abi else {
        return Vec::new();
    };
    let mut r = vec![
        "file reads, writes and execs outside the task's rules",
        "ptrace, process_vm_* and /proc/<pid>/mem of processes outside the task",
    ];
    if abi >= 2 {
        r.push("links and renames into other hierarchies");
    }
    if abi >= 3 {
        r.push("truncation");
    }
    if abi >= 5 {
        r.push("device ioctls");
    }
    if abi >= 6 {
        r.push("signals and abstract unix connects to processes outside the task");
    }
    r
}

/// One line for `leash status`: the ABI and the rights it enforces.
#[must_use]
pub fn summary() -> String {
    match kernel_abi() {
        Some(abi) => format!(
            "ABI {abi}, applied by leash run (not to processes joined through the attach API): refuses {}",
            rights(Some(abi)).join("; ")
        ),
        None => "not available: leash run refuses the writes and restricted file modes".to_owned(),
    }
}

/// How a task's file rules are enforced, for `leash task show`.
#[must_use]
pub fn enforcement(mode: FileMode) -> String {
    let abi = match kernel_abi() {
        Some(abi) => format!("Landlock ABI {abi}"),
        None => "no Landlock on this kernel".to_owned(),
    };
    format!(
        "{mode}: {abi}, applied by leash run to the command and its descendants; processes joined through the attach API get no domain"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_grow_with_the_abi() {
        assert!(rights(None).is_empty());
        assert_eq!(rights(Some(1)).len(), 2);
        assert!(!rights(Some(2)).iter().any(|r| r.contains("signals")));
        assert!(rights(Some(7)).iter().any(|r| r.contains("signals")));
    }

    #[test]
    fn a_missing_granted_path_is_an_error_before_anything_is_restricted() {
        let rules = FileRules {
            mode: FileMode::Restricted,
            read: vec!["/surely/not/here".into()],
            ..FileRules::default()
        };
        let Err(err) = Domain::prepare(&rules, &Extra::default()) else {
            panic!("prepared with a missing path");
        };
        assert!(err.to_string().contains("/surely/not/here"), "{err}");
    }
}
