//! Attach scope `task`: the network hooks on each leash cgroup, created on first use,
//! adopted from a previous daemon and pruned when empty.

use std::{
    fs,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use super::{
    Enforcer, LoadError,
    attach::{NewLink, attach_cgroup},
    pins,
};
use crate::kernel::{
    AttachScope, programs,
    scope::{self, ScopeError},
};

/// The network hooks of one leash cgroup. With a pin dir the links are pinned under
/// `links-scope/<cgroup id>/` and held by descriptor in `held` (and `links` stays
/// empty); else dropping `links` detaches.
pub(super) struct ScopeLinks {
    path: PathBuf,
    links: Vec<NewLink>,
    /// Each pinned link's descriptor, by pin path: a removed pin detaches nothing while
    /// the daemon runs, and [`Enforcer::restore_pins`] pins it again.
    pub(super) held: Vec<(PathBuf, OwnedFd)>,
}

impl Enforcer {
    /// Where the network hooks are attached.
    #[must_use]
    pub const fn attach_scope(&self) -> AttachScope {
        self.scope
    }

    /// In attach scope `task`, moves process `pid` into its leash cgroup (created, with
    /// the network hooks attached, on first use). Call before tagging it. A no-op in
    /// scope `root`.
    pub fn enter_scope(&mut self, pid: u32) -> Result<(), LoadError> {
        let Some((cur, target)) = self.scope_cgroup(pid)? else {
            return Ok(());
        };
        if cur != target {
            scope::move_into(&target, pid).map_err(|source| ScopeError::Move {
                pid,
                cgroup: target.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// In attach scope `task`: the cgroup `pid` is in and the leash cgroup for it,
    /// created with the network hooks attached if need be. `None` in scope `root`.
    pub fn scope_cgroup(&mut self, pid: u32) -> Result<Option<(PathBuf, PathBuf)>, LoadError> {
        if self.scope == AttachScope::Root {
            return Ok(None);
        }
        let cur = scope::cgroup_of(&self.cgroup, pid).map_err(ScopeError::CgroupOf)?;
        let target = scope::leash_cgroup_for(&self.cgroup, &cur);
        if let Err(source) = fs::create_dir(&target)
            && source.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(ScopeError::Create {
                path: target,
                source,
            }
            .into());
        }
        let id = scope::cgroup_id(&target).map_err(ScopeError::CgroupId)?;
        if !self.scopes.contains_key(&id) {
            self.attach_scope_hooks(id, &target)?;
        }
        Ok(Some((cur, target)))
    }

    /// Attaches the network hooks to a leash cgroup and registers it with the guard
    /// (registered first: a move into it is never taken for an escape).
    fn attach_scope_hooks(&mut self, id: u64, path: &Path) -> Result<(), LoadError> {
        self.maps.add_scope(id)?;
        let mut links = Vec::new();
        for program in programs::scoped_cgroup() {
            let link = attach_cgroup(&mut self.ebpf, program, path, true)?
                .ok_or(LoadError::MissingProgram(program))?;
            links.push((program, NewLink::Aya(link)));
        }
        if let Some(unix) = &self.unix {
            for (program, link) in unix.attach(path)? {
                links.push((program, NewLink::Raw(link)));
            }
        }
        let (links, held) = match &self.pin_dir {
            Some(dir) => {
                let dir = pins::scope_links(dir, id);
                fs::create_dir_all(&dir).map_err(|source| LoadError::PinDir {
                    path: dir.clone(),
                    source,
                })?;
                // Held until the leash cgroup is pruned, when they go with their pins.
                (Vec::new(), pins::hand_over(&dir, links)?)
            }
            None => (links.into_iter().map(|(_, l)| l).collect(), Vec::new()),
        };
        self.scopes.insert(
            id,
            ScopeLinks {
                path: path.to_owned(),
                links,
                held,
            },
        );
        Ok(())
    }

    /// Re-attaches this binary's programs to the leash cgroups a previous daemon
    /// pinned, replacing its links with no gap; a pin whose cgroup is gone is removed.
    pub(super) fn adopt_scopes(&mut self) -> Result<(), LoadError> {
        let Some(pin_dir) = self.pin_dir.clone() else {
            return Ok(());
        };
        for (id, dir) in pins::pinned_scopes(&pin_dir) {
            if let Some((id, path)) =
                id.and_then(|id| Some((id, scope::find_cgroup(&self.cgroup, id)?)))
            {
                self.attach_scope_hooks(id, &path)?;
            } else {
                pins::remove_pins(&dir)?;
                if let Some(id) = id {
                    self.maps.remove_scope(id)?;
                }
            }
        }
        Ok(())
    }

    /// Detaches the hooks of leash cgroups no process is left in, and removes them
    /// (a leftover child would keep e.g. a pod's cgroup from being removed).
    pub fn prune_scopes(&mut self) {
        let empty: Vec<u64> = self
            .scopes
            .iter()
            .filter(|(_, s)| scope::is_empty(&s.path))
            .map(|(id, _)| *id)
            .collect();
        for id in empty {
            let Some(s) = self.scopes.remove(&id) else {
                continue;
            };
            if let Err(e) = self.maps.remove_scope(id) {
                tracing::warn!("cannot unregister leash cgroup {}: {e}", s.path.display());
            }
            drop((s.links, s.held));
            if let Some(dir) = &self.pin_dir
                && let Err(e) = pins::remove_pins(&pins::scope_links(dir, id))
            {
                tracing::warn!("cannot unpin the hooks of {}: {e}", s.path.display());
            }
            if s.path != self.cgroup && s.path.file_name().is_some_and(|n| n == scope::LEASH_CGROUP)
            {
                let _ = fs::remove_dir(&s.path);
            }
        }
        if self.scopes.is_empty()
            && let Some(dir) = &self.pin_dir
        {
            pins::remove_empty_scope_links(dir);
        }
    }

    /// Leash cgroups with the network hooks attached.
    #[must_use]
    pub fn scope_cgroups(&self) -> Vec<PathBuf> {
        self.scopes.values().map(|s| s.path.clone()).collect()
    }
}
