//! The tasks kernel tests put straight into the maps, through the daemon's own install
//! path, without a daemon.

use std::time::Duration;

use leash::{
    daemon::RegistryError,
    kernel::maps::Maps,
    protocol::{CreateTask, Grants, Mode, TaskId},
};

/// A task for the kernel tests: grants in the README's grant syntax, plus per-task
/// settings. Installed through the daemon's own path ([`leash::daemon::install`]).
#[derive(Clone, Debug, Default)]
pub struct TaskSpec {
    pub exec: Vec<String>,
    pub connect: Vec<String>,
    /// Task lifetime; `None` = until ended.
    pub ttl: Option<Duration>,
    pub audit: bool,
    /// Decision counter row (one per agent).
    pub counter_slot: u32,
}

impl TaskSpec {
    /// Resolves the grants and puts the task in `maps` as task `id`.
    pub fn install(&self, maps: &mut Maps, id: u64) -> Result<(), RegistryError> {
        let req = CreateTask {
            agent: "test".into(),
            grants: Grants {
                exec: self.exec.clone(),
                connect: self.connect.clone(),
                files: Vec::new(),
            },
            mode: self.audit.then_some(Mode::Audit),
            ..CreateTask::default()
        };
        let expires_ns = leash::clock::expiry_after(self.ttl);
        leash::daemon::install(maps, TaskId(id), &req, expires_ns, self.counter_slot)
    }
}

/// Spec shorthand.
#[must_use]
pub fn spec(exec: &[&str], connect: &[&str]) -> TaskSpec {
    TaskSpec {
        exec: exec.iter().map(|s| (*s).to_owned()).collect(),
        connect: connect.iter().map(|s| (*s).to_owned()).collect(),
        ..TaskSpec::default()
    }
}
