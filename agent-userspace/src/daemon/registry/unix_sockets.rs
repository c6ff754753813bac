//! `unix:` path grants whose socket did not exist when they were made (a server that
//! starts after its client's task): the daemon looks again on its sweep, in the view
//! the grant holds in, and records the first socket it finds there. Until then the
//! lsm backend reaches nothing through the grant (never by name alone); the portable
//! backend, which cannot see the peer, goes by the name in that view meanwhile.

use super::{RegistryError, Tasks};
use crate::{
    grants::{SocketFile, UnixView},
    kernel::maps::Maps,
};

/// A path grant still without its socket: task, grant id, name, view.
pub type Unresolved = (u64, String, String, UnixView);

impl Tasks {
    /// Live tasks' `unix:` path grants whose socket file is not recorded yet.
    #[must_use]
    pub fn unresolved_sockets(&self) -> Vec<Unresolved> {
        let mut out = Vec::new();
        for t in self.tasks.values().filter(|t| t.is_live()) {
            for g in t.grants.iter().filter(|g| g.unix_socket.is_none()) {
                let (Some(view), Some(name)) = (g.unix_view, g.unix.first()) else {
                    continue;
                };
                if name.starts_with('/') {
                    out.push((t.id, g.id.clone(), name.clone(), view));
                }
            }
        }
        out
    }

    /// Records `file` as the socket grant `gid` of task `id` names, and puts it in the
    /// kernel. Says whether anything changed (the grant may be gone, or resolved).
    pub fn record_socket(
        &mut self,
        maps: &mut Maps,
        id: u64,
        gid: &str,
        file: SocketFile,
    ) -> Result<bool, RegistryError> {
        let Some(g) = self
            .get_mut(id)?
            .grants
            .iter_mut()
            .find(|g| g.id == gid && g.unix_socket.is_none())
        else {
            return Ok(false);
        };
        g.unix_socket = Some(file);
        self.sync(maps, id)?;
        Ok(true)
    }
}

/// A root directory in `view`, to look a granted name up in: this process's own, or
/// that of one of `pids` (the task's threads) whose view it is.
#[must_use]
pub fn root_in(view: UnixView, pids: &[u32]) -> Option<String> {
    if UnixView::of(None, std::path::Path::new("/")).is_ok_and(|own| own == view) {
        return Some("/".to_owned());
    }
    pids.iter().find_map(|&pid| {
        let root = format!("/proc/{pid}/root");
        UnixView::of(Some(pid), std::path::Path::new(&root))
            .is_ok_and(|v| v == view)
            .then_some(root)
    })
}
