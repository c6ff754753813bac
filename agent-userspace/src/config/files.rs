//! `files:` the base sets of the Landlock domain `leash run` applies (docs/grants.md).

use serde::{Deserialize, Serialize};

use super::{ConfigError, error::invalid};

/// `files:` what every task may read (`restricted` mode) and write, and what no allowed
/// hierarchy includes. Paths are absolute; `exclude` entries may have `*` in their last
/// component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Readable (and executable) in `restricted` mode: programs, libraries, `/etc`, and
    /// what the dynamic loader and glibc's resolver read.
    pub read: Vec<String>,
    /// Writable in `writes` and `restricted` modes, besides the workspace and the
    /// task's tmp directory.
    pub write: Vec<String>,
    /// Left out of every allowed hierarchy: secrets inside `/etc`, for instance.
    pub exclude: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Default: the system's programs and libraries, `/etc`, `/proc`, the CPU list and the
/// resolver's runtime files readable; the terminal and null-like devices and `/dev/shm`
/// writable; shadow files, sudoers, SSH host keys and TLS private keys excluded.
impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            read: strings(&[
                "/usr",
                "/bin",
                "/sbin",
                "/lib",
                "/lib32",
                "/lib64",
                "/libx32",
                "/etc",
                "/proc",
                "/sys/devices/system/cpu",
                "/run/systemd/resolve",
                "/dev/urandom",
                "/dev/random",
            ]),
            write: strings(&[
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/tty",
                "/dev/pts",
                "/dev/ptmx",
                "/dev/shm",
            ]),
            exclude: strings(&[
                "/etc/shadow",
                "/etc/shadow-",
                "/etc/gshadow",
                "/etc/gshadow-",
                "/etc/sudoers",
                "/etc/sudoers.d",
                "/etc/ssh/ssh_host_*_key",
                "/etc/ssl/private",
                "/etc/security/opasswd",
            ]),
        }
    }
}

impl FilesConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (field, list) in [
            ("files.read", &self.read),
            ("files.write", &self.write),
            ("files.exclude", &self.exclude),
        ] {
            for path in list {
                if !path.starts_with('/') || path.contains('\0') {
                    return Err(invalid(
                        field,
                        format!("{path:?} is not an absolute path; write it as /dir/name"),
                    ));
                }
                if field != "files.exclude" && path.contains('*') {
                    return Err(invalid(
                        field,
                        format!("{path:?}: `*` is only taken in files.exclude"),
                    ));
                }
            }
        }
        Ok(())
    }
}
