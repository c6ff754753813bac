//! Housekeeping on a timer: expired tasks and grants end, exits whose event was lost
//! are caught, pending grants lapse, removed pins come back, learned DNS addresses
//! expire, the sockets of unix grants made before them are recorded.

use std::{sync::Arc, time::Duration};

use super::{Daemon, Inner, lifecycle::Stopping, registry};
use crate::{
    clock,
    protocol::{self, EndReason, TaskId},
};

impl Daemon {
    /// Ends active tasks among `candidates` that have no process left.
    pub fn end_exited(&self, candidates: &[u64]) {
        let done = {
            let inner = self.lock();
            inner.tasks.exited(inner.enforcer.maps(), candidates)
        };
        for id in done {
            if let Err(e) = self.end_task(id, EndReason::Exited) {
                tracing::error!(task = %TaskId(id), "cannot end an exited task: {e}");
            }
        }
    }

    /// Ends expired tasks and revokes expired grants. The kernel already denies them at
    /// their expiry; this removes their entries and records it.
    pub fn sweep(&self, all_exits: bool) {
        let (tasks, grants, active) = {
            let inner = self.lock();
            let (t, g) = inner.tasks.expired(clock::boottime_ns());
            let active: Vec<u64> = if all_exits {
                inner
                    .tasks
                    .tasks
                    .values()
                    .filter(|t| t.state == protocol::TaskState::Active)
                    .map(|t| t.id)
                    .collect()
            } else {
                Vec::new()
            };
            (t, g, active)
        };
        for id in tasks {
            if let Err(e) = self.end_task(id, EndReason::Expired) {
                tracing::error!(task = %TaskId(id), "cannot end an expired task: {e}");
            }
        }
        for (id, gid) in grants {
            if let Err(e) = self.revoke_grant(id, &gid, "expired") {
                tracing::error!(task = %TaskId(id), grant = gid, "cannot revoke an expired grant: {e}");
            }
        }
        self.sweep_pending(clock::boottime_ns());
        self.sweep_learned();
        if !active.is_empty() {
            // Catches exits whose event was lost to a full ring buffer.
            self.end_exited(&active);
        }
        if all_exits {
            for id in self.commands_gone() {
                self.command_exited(id);
            }
            let stopped = self.sweep_responders();
            if stopped > 0 {
                tracing::info!(stopped, "DNS responders serving no live task stopped");
            }
        }
        if all_exits {
            self.restore_pins();
        }
        self.lock().enforcer.prune_scopes();
    }

    /// Pins again what someone removed from the pin directory while this daemon runs
    /// (its own references keep enforcement in place meanwhile), so the next daemon
    /// adopts the same maps and links.
    pub fn restore_pins(&self) {
        for path in self.lock().enforcer.restore_pins() {
            tracing::warn!(path = %path.display(), "a pin was removed; pinned again");
        }
    }

    /// Looks again for the sockets of `unix:` path grants that had none when granted,
    /// in the view each grant holds in (see `registry::unix_sockets`).
    pub fn refresh_unix_sockets(&self) {
        let unresolved = self.lock().tasks.unresolved_sockets();
        for (id, gid, name, view) in unresolved {
            let pids = self.lock().enforcer.maps().procs_of(id);
            let Some(root) = registry::root_in(view, &pids) else {
                continue;
            };
            let Some(file) = crate::grants::SocketFile::at(std::path::Path::new(&root), &name)
            else {
                continue;
            };
            let mut inner = self.lock();
            let Inner { enforcer, tasks } = &mut *inner;
            match tasks.record_socket(enforcer.maps_mut(), id, &gid, file) {
                Ok(true) => {
                    tracing::info!(task = %TaskId(id), grant = gid, name, "the socket of a unix grant now exists; recorded");
                    self.save(&inner, id);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(task = %TaskId(id), grant = gid, "cannot record the socket of a unix grant: {e}");
                }
            }
        }
    }
}

/// Runs the periodic sweep until `shutdown` fires.
pub(super) async fn sweeper(daemon: Arc<Daemon>, mut stopping: Stopping) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopping.wait() => return,
        }
        n += 1;
        let d = Arc::clone(&daemon);
        // Every 2 s, also look for tasks whose exit event was lost.
        let all = n.is_multiple_of(8);
        if let Err(e) = tokio::task::spawn_blocking(move || {
            d.sweep(all);
            if all {
                d.refresh_unix_sockets();
                d.audit.sign_head();
            }
        })
        .await
        {
            tracing::error!("a sweep failed: {e}");
        }
    }
}
