//! The pin tree under the pin dir (laid out in `kernel/mod.rs`): preparing it, handing
//! links over from a previous daemon with no gap, pinning again what was removed, and
//! removing it all.

use std::{
    fs,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, PinnedLink};
use leash_common::maps::{self as names, programs as p};

use super::{Enforcer, HandoverError, LoadError, attach::Links};
use crate::kernel::{mounts, scope, sys};

/// Maps, under the pin dir, one pin per map name.
const MAPS: &str = "maps";
/// Root links, under the pin dir, one pin per program name.
pub(super) const LINKS: &str = "links";
/// Links of the leash cgroups, under the pin dir: one directory per cgroup id.
const SCOPE_LINKS: &str = "links-scope";
/// Suffix of a link pin being handed over (bpffs refuses names with a dot).
const NEW: &str = "-new";

/// Mounts bpffs if need be and creates the pin dir; returns the pin path of every map.
pub(super) fn prepare(dir: &Path) -> Result<Vec<(&'static str, PathBuf)>, LoadError> {
    mounts::ensure_bpffs()?;
    for sub in [MAPS, LINKS] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(|source| LoadError::PinDir { path, source })?;
    }
    Ok(names::ALL
        .iter()
        .map(|n| (*n, dir.join(MAPS).join(n)))
        .collect())
}

/// Whether the generation pinned here attached the network hooks at the cgroup2 root
/// (attach scope `root`), a hand-over of it included.
pub(super) fn root_scoped(dir: &Path) -> bool {
    let links = dir.join(LINKS);
    [
        p::NET_CONNECT4.to_owned(),
        format!("{}{NEW}", p::NET_CONNECT4),
    ]
    .iter()
    .any(|name| links.join(name).symlink_metadata().is_ok())
}

/// Removes the directory of the leash cgroups' links once it is empty (the last leash
/// cgroup was pruned), so the pin dir is as a daemon without them left it; a new
/// leash cgroup makes it again.
pub(super) fn remove_empty_scope_links(pin_dir: &Path) {
    let _ = fs::remove_dir(pin_dir.join(SCOPE_LINKS));
}

/// Where the links of the leash cgroup `id` are pinned.
pub(super) fn scope_links(pin_dir: &Path, id: u64) -> PathBuf {
    pin_dir.join(SCOPE_LINKS).join(id.to_string())
}

impl Enforcer {
    /// Pins again every link (root and leash cgroups') and map of this daemon whose pin
    /// is gone (removed under bpffs by a path the guard does not recognise, or while
    /// its caller was being killed), so a daemon started next still finds them;
    /// returns those paths. A link pin whose `-new` twin exists is a hand-over in
    /// progress: left alone.
    pub fn restore_pins(&self) -> Vec<PathBuf> {
        let mut restored = Vec::new();
        let scoped = self.scopes.values().flat_map(|s| &s.held);
        for (path, fd) in self.held.iter().chain(&self.pinned_maps).chain(scoped) {
            let mut twin = path.as_os_str().to_owned();
            twin.push(NEW);
            if path.symlink_metadata().is_ok() || Path::new(&twin).symlink_metadata().is_ok() {
                continue;
            }
            match sys::pin(fd.as_fd(), path) {
                Ok(()) => restored.push(path.clone()),
                Err(e) => tracing::error!(path = %path.display(), "cannot pin again: {e}"),
            }
        }
        restored
    }
}

/// Pins the new links and detaches the previous daemon's, with no gap: every new link
/// is attached and pinned (as `NAME-new`) before any old one is let go; then each new
/// pin takes its final name. A crash at any point leaves at least one generation pinned.
/// Returns a descriptor of each new link, by its final pin path, for the caller to hold.
pub(super) fn hand_over(dir: &Path, links: Links) -> Result<Vec<(PathBuf, OwnedFd)>, LoadError> {
    let mut staged = Vec::new();
    let mut held = Vec::new();
    for (program, link) in links {
        let path = dir.join(format!("{program}{NEW}"));
        detach_pin(&path)?;
        drop(link.pin(program, &path)?);
        let fd = sys::get_pinned(&path).map_err(|source| LoadError::Handover {
            path: path.clone(),
            source: HandoverError::Io(source),
        })?;
        held.push((dir.join(program), fd));
        staged.push((program, path));
    }
    // Every pinned link of an earlier generation, including programs this backend does
    // not use any more (an lsm program after a switch to portable).
    let old = fs::read_dir(dir).map_err(|source| LoadError::PinDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut previous = Vec::new();
    for entry in old.flatten() {
        let path = entry.path();
        if !staged.iter().any(|(_, p)| *p == path) {
            previous.extend(unpin(&path)?);
        }
    }
    // Until its link goes, a previous program runs beside the new one and each of its
    // decisions is counted and reported twice. Letting a tracepoint link go waits for
    // an RCU grace period (30-50 ms on Linux 6.18): one after the other, the fifty
    // links kept both generations running for about two seconds; together, the waits
    // overlap.
    std::thread::scope(|s| {
        for link in previous {
            s.spawn(move || drop(link));
        }
    });
    for (program, path) in staged {
        let target = dir.join(program);
        fs::rename(&path, &target).map_err(|source| LoadError::Handover {
            path: target.clone(),
            source: HandoverError::Io(source),
        })?;
    }
    Ok(held)
}

/// Unpins a link and drops it, which detaches it. Absent pins are fine.
fn detach_pin(path: &Path) -> Result<(), LoadError> {
    drop(unpin(path)?);
    Ok(())
}

/// Unpins a link: it is detached when the returned link is dropped. Absent pins are
/// fine.
fn unpin(path: &Path) -> Result<Option<FdLink>, LoadError> {
    if !path.exists() {
        return Ok(None);
    }
    let handover = |source| LoadError::Handover {
        path: path.to_owned(),
        source,
    };
    let link = PinnedLink::from_pin(path).map_err(|e| handover(HandoverError::Link(e)))?;
    Ok(Some(
        link.unpin().map_err(|e| handover(HandoverError::Io(e)))?,
    ))
}

/// Unpins (detaches) every link pinned in `dir` and removes it.
pub(super) fn remove_pins(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            detach_pin(&entry.path())?;
            removed.push(entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
    Ok(removed)
}

/// The leash cgroups with links pinned under `pin_dir`: (cgroup id, if the directory
/// names one; its pin directory).
pub(super) fn pinned_scopes(pin_dir: &Path) -> Vec<(Option<u64>, PathBuf)> {
    let Ok(entries) = fs::read_dir(pin_dir.join(SCOPE_LINKS)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| {
            (
                e.file_name().to_str().and_then(|n| n.parse().ok()),
                e.path(),
            )
        })
        .collect()
}

/// Detaches the hooks of every leash cgroup pinned under `pin_dir` and removes the
/// cgroups no process is left in.
pub(super) fn cleanup_scopes(pin_dir: &Path, root: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    for (id, dir) in pinned_scopes(pin_dir) {
        removed.extend(remove_pins(&dir)?);
        let cgroup = id.and_then(|id| scope::find_cgroup(root, id));
        if let Some(cgroup) = cgroup
            && cgroup.file_name().is_some_and(|n| n == scope::LEASH_CGROUP)
            && scope::is_empty(&cgroup)
        {
            let _ = fs::remove_dir(cgroup);
        }
    }
    let _ = fs::remove_dir(pin_dir.join(SCOPE_LINKS));
    Ok(removed)
}

/// Removes everything a daemon pinned under `pin_dir`: links first (which detaches
/// the programs), then the maps. Enforcement stops; tagged processes run free.
pub fn cleanup(pin_dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    if let Ok(root) = mounts::cgroup2_root() {
        removed.extend(cleanup_scopes(pin_dir, &root)?);
    }
    let links = pin_dir.join(LINKS);
    if let Ok(entries) = fs::read_dir(&links) {
        for entry in entries.flatten() {
            detach_pin(&entry.path())?;
            removed.push(entry.path());
        }
    }
    let maps = pin_dir.join(MAPS);
    if let Ok(entries) = fs::read_dir(&maps) {
        for entry in entries.flatten() {
            fs::remove_file(entry.path()).map_err(|source| LoadError::PinDir {
                path: entry.path(),
                source,
            })?;
            removed.push(entry.path());
        }
    }
    for dir in [links, maps, pin_dir.to_owned()] {
        let _ = fs::remove_dir(dir);
    }
    Ok(removed)
}
