//! The operator's choices of how the kernel side runs: plain enums that the config,
//! the CLI and the kernel module share.

use std::{fmt, str::FromStr};

/// Which backend the operator asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// `lsm` where the kernel allows BPF LSM programs, else `portable`.
    #[default]
    Auto,
    Lsm,
    Portable,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "lsm" => Ok(Self::Lsm),
            "portable" => Ok(Self::Portable),
            other => Err(format!(
                "unknown backend {other:?}: use one of auto, lsm, portable"
            )),
        }
    }
}

/// Attach scope: where the network hooks are attached (see `kernel/scope.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachScope {
    /// Hooks at the cgroup2 root. No process can leave their reach.
    Root,
    /// Hooks on leash cgroups only; tasks' processes are moved into them.
    Task,
    /// `task` where a tagged process moved out of its leash cgroups is killed at the
    /// move (`bpf_send_signal_task`) and cgroups can be made; else `root`. The daemon
    /// says which it picked and why (`leash status`). The default.
    #[default]
    Auto,
}

impl fmt::Display for AttachScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Root => "root",
            Self::Task => "task",
            Self::Auto => "auto",
        })
    }
}

impl FromStr for AttachScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "root" => Ok(Self::Root),
            "task" => Ok(Self::Task),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown attach scope {other:?}: expected auto, root or task"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scopes() {
        assert_eq!("task".parse(), Ok(AttachScope::Task));
        assert_eq!("root".parse(), Ok(AttachScope::Root));
        assert_eq!("auto".parse(), Ok(AttachScope::Auto));
        assert!(
            "pod"
                .parse::<AttachScope>()
                .unwrap_err()
                .contains("auto, root or task")
        );
    }
}
