//! What a caller may read. From outside every task: everything. From inside a task: its
//! own task and the tasks it delegated, and its own events; another task's id is "no
//! such task", so a task cannot learn what else runs. A caller whose connecting process is gone reads nothing.

use super::{Daemon, RegistryError, registry};
use crate::{
    auth::{Caller, Standing},
    protocol::{self, TaskId},
};

/// The tasks a caller may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadScope {
    All,
    Task(u64),
    Nothing,
}

impl ReadScope {
    #[must_use]
    pub fn of(caller: &Caller) -> Self {
        match caller.standing {
            Standing::Host => Self::All,
            Standing::InTask(t) => Self::Task(t),
            Standing::Gone => Self::Nothing,
        }
    }

    #[must_use]
    pub fn sees(self, id: u64) -> bool {
        match self {
            Self::All => true,
            Self::Task(t) => t == id,
            Self::Nothing => false,
        }
    }

    /// Whether a task with these ancestors is visible: a caller's task sees the tasks
    /// it delegated.
    #[must_use]
    pub fn sees_any(self, chain: &[u64]) -> bool {
        matches!(self, Self::Task(t) if chain.contains(&t))
    }

    /// Whether an event of the task with this printable id is visible.
    #[must_use]
    pub fn sees_event(self, task: &str) -> bool {
        match self {
            Self::All => true,
            Self::Task(t) => task == TaskId(t).to_string(),
            Self::Nothing => false,
        }
    }
}

impl Daemon {
    /// The task `pid` runs in. Any of its threads counts: a tagged process whose leader
    /// thread exited still has tagged threads, and the peer pid names the process.
    pub fn task_of(&self, pid: u32) -> Option<u64> {
        let tids = registry::threads_of(pid);
        let inner = self.lock();
        tids.iter()
            .find_map(|&tid| inner.enforcer.maps().tag_of(tid))
    }

    /// `GET /v1/tasks`: the tasks the caller may see.
    ///
    /// Tasks that `filter` drops by agent or state are not viewed: up to a thousand
    /// ended tasks are kept, and viewing each made `?active=true` cost far more than
    /// its answer.
    pub fn list_for(&self, caller: &Caller, filter: &protocol::TaskFilter) -> Vec<protocol::Task> {
        let scope = ReadScope::of(caller);
        self.lock()
            .tasks
            .tasks
            .values()
            .filter(|t| scope.sees(t.id) || scope.sees_any(&t.chain))
            .filter(|t| filter.admits(&t.agent, t.state))
            .map(|t| t.view(&self.limits.trust_domain))
            .collect()
    }

    /// `GET /v1/tasks/{id}`: a task out of the caller's sight does not exist for it.
    pub fn task_for(&self, caller: &Caller, id: u64) -> Result<protocol::Task, RegistryError> {
        let seen = match ReadScope::of(caller) {
            ReadScope::Task(t) => self.sees_from(t, id),
            scope => scope.sees(id),
        };
        if !seen {
            return Err(RegistryError::NoTask(TaskId(id).to_string()));
        }
        self.task(id)
    }

    /// `GET /v1/status`: from inside a task, without what tells of other tasks (their
    /// count, the maps' fill).
    pub fn status_for(&self, caller: &Caller) -> protocol::Status {
        let mut status = self.status();
        let scope = ReadScope::of(caller);
        if scope == ReadScope::All {
            return status;
        }
        let own = match scope {
            ReadScope::Task(t) => self
                .lock()
                .tasks
                .get(t)
                .filter(|r| r.state != protocol::TaskState::Ended)
                .map_or(0, |_| 1),
            _ => 0,
        };
        status.tasks_active = own;
        status.maps.clear();
        status.scope = Some(match scope {
            ReadScope::Task(t) => format!(
                "task {}: other tasks and the maps' fill are not shown",
                TaskId(t)
            ),
            _ => "the calling process has exited: no task is shown".to_owned(),
        });
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_sees_only_itself_and_a_gone_caller_nothing() {
        let caller = |standing| Caller {
            standing,
            ..Caller::default()
        };
        let host = ReadScope::of(&caller(Standing::Host));
        assert!(host.sees(1) && host.sees_event("0000000000000002"));
        let t = ReadScope::of(&caller(Standing::InTask(0x2a)));
        assert!(t.sees(0x2a) && !t.sees(1));
        assert!(t.sees_event("000000000000002a") && !t.sees_event("0000000000000001"));
        let gone = ReadScope::of(&Caller::default());
        assert_eq!(
            gone,
            ReadScope::Nothing,
            "the default caller is the most restricted"
        );
        assert!(!gone.sees(0x2a) && !gone.sees_event("000000000000002a"));
    }
}
