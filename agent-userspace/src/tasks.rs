//! A task's grants, compiled and installed into the kernel's maps as one unit.

use std::time::Duration;

use agent_common::{ExecGrant, TaskInfo, TaskMode, TaskState};

use crate::{
    clock,
    grants::{self, ConnectSpec, ExecFile, GrantError, NetGrant},
    kernel::maps::{Maps, MapsError},
    sockets::{self, SocketGrant, UnixName},
};

/// Grants in the README's grant syntax, plus per-task settings.
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

/// Grants resolved against the file system and DNS, ready for the maps.
#[derive(Clone, Debug, Default)]
pub struct CompiledGrants {
    pub exec: Vec<ExecFile>,
    pub net: Vec<NetGrant>,
    /// Unix socket names (`unix:` grants).
    pub unix: Vec<UnixName>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error(transparent)]
    Maps(#[from] MapsError),
}

impl TaskSpec {
    /// Resolves every grant; the first bad one is the error.
    pub fn compile(&self) -> Result<CompiledGrants, GrantError> {
        let mut out = CompiledGrants::default();
        for spec in &self.exec {
            out.exec.extend(grants::resolve_exec(spec)?);
        }
        for spec in &self.connect {
            if let Some(grant) = sockets::parse(spec) {
                if let SocketGrant::Unix(name) = grant? {
                    out.unix.push(name);
                }
            } else {
                let parsed: ConnectSpec = spec.parse()?;
                out.net.extend(parsed.to_net_grants(spec, 0)?);
            }
        }
        Ok(out)
    }

    #[must_use]
    pub fn info(&self) -> TaskInfo {
        TaskInfo {
            expires_ns: clock::expiry_after(self.ttl),
            state: TaskState::Active as u32,
            mode: if self.audit {
                TaskMode::Audit
            } else {
                TaskMode::Enforce
            } as u32,
            counter_slot: self.counter_slot,
            families: sockets::families_of(&self.connect),
        }
    }
}

/// Installs a task: grants first, the task entry last, so a tagged process never
/// sees a live task with half its grants (it would be denied, not wrongly allowed).
pub fn install(
    maps: &mut Maps,
    id: u64,
    info: &TaskInfo,
    grants: &CompiledGrants,
) -> Result<(), TaskError> {
    let result = (|| {
        for file in &grants.exec {
            maps.grant_exec(&file.key(id), file.state.grant(0))?;
            for key in file.script_keys(id)? {
                maps.grant_script(&key, ExecGrant { expires_ns: 0 })?;
            }
        }
        maps.set_net(id, &grants::compile_net(id, &grants.net)?)?;
        for name in &grants.unix {
            maps.grant_unix(&name.key(id), ExecGrant { expires_ns: 0 })?;
        }
        maps.put_task(id, info)?;
        Ok(())
    })();
    if result.is_err() {
        // Nothing half-installed stays behind; removal errors are secondary here.
        let _ = maps.remove_task(id);
    }
    result
}
