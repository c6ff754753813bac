//! Loads the kernel programs, picks a backend and attaches it.

use std::{
    collections::HashMap,
    fs,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use agent_common::{maps as names, offsets::GLOBAL_NAME};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    pin::PinError,
    programs::{
        CgroupAttachMode, Lsm, ProgramError,
        links::{FdLink, LinkError, PinnedLink},
    },
};
use aya_log::EbpfLogger;

use crate::{
    EBPF_OBJECT,
    kernel::backend::{Backend, BackendChoice, COMMON_PROGRAMS},
    kernel::bpf_syscall,
    kernel::events::EventReader,
    kernel::kernel_offsets::{self, OffsetError},
    kernel::maps::{Maps, MapsError},
    kernel::mounts::{self, MountError},
    kernel::scope::{self, AttachScope},
    kernel::unix_hooks::{self, UnixHookError, UnixHooks},
};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("cannot read kernel BTF for program loading: {0}")]
    Btf(#[source] aya::BtfError),
    #[error("cannot load the eBPF object: {0} (are you root, with CAP_BPF and CAP_PERFMON?)")]
    Object(#[source] aya::EbpfError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    UnixHooks(#[from] UnixHookError),
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("cannot load program {program}: {source}")]
    Load {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot attach program {program}: {source}")]
    Attach {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot open cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the lsm backend was requested but cannot run here: {0}; boot with lsm=...,bpf (CONFIG_BPF_LSM=y) or use --backend portable"
    )]
    LsmUnavailable(String),
    #[error("cannot pin {what} at {path}: {source}")]
    Pin {
        what: String,
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("cannot hand over the pinned link {path}: {reason}")]
    Handover { path: PathBuf, reason: String },
    #[error("attach scope task: {0}")]
    Scope(String),
    #[error("cannot prepare the pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub backend: BackendChoice,
    /// Level of the kernel-side aya-log statements; `Off` makes them cost nothing.
    pub kernel_log_level: Option<log::LevelFilter>,
    /// Pin maps and links here (a bpffs directory), adopting what a previous daemon
    /// pinned: enforcement then outlives this process. `None` detaches on drop.
    pub pin_dir: Option<PathBuf>,
    /// Map capacities (`max_entries`, or bytes for the ring buffer) by map name.
    pub capacities: Vec<(&'static str, u32)>,
    /// Where the network hooks are attached.
    pub attach_scope: AttachScope,
}

/// The loaded and attached programs. Dropping it detaches them.
pub struct Enforcer {
    // Holds the programs, hence the links that keep them attached.
    ebpf: Ebpf,
    backend: Backend,
    why: String,
    attached: Vec<&'static str>,
    cgroup: PathBuf,
    maps: Maps,
    events: Option<EventReader>,
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    scope: AttachScope,
    /// Leash cgroups with the network hooks attached, by cgroup id.
    scopes: HashMap<u64, ScopeLinks>,
    pin_dir: Option<PathBuf>,
    /// This daemon's own references to its pinned root links, by pin path: a pin removed
    /// under bpffs (by a tagged process the guard kills only after the unlink, or not
    /// at all: it compares path strings) then detaches nothing while the daemon runs,
    /// and [`Self::restore_pins`] pins it again.
    held: Vec<(PathBuf, OwnedFd)>,
    /// Its own references to the pinned maps, by pin path, for the same purpose: a
    /// daemon started after a map pin is gone would create that map anew, empty.
    pinned_maps: Vec<(PathBuf, OwnedFd)>,
    /// The cgroup unix hooks, where the kernel has them (portable backend).
    unix: Option<UnixHooks>,
    /// Their root links when nothing is pinned (dropping them detaches).
    #[expect(dead_code, reason = "held only for their lifetime")]
    unix_links: Vec<OwnedFd>,
}

/// New links by program, to hand over.
type Links = Vec<(&'static str, NewLink)>;

/// A link to pin or hold: aya's, or one of the unix hooks (made by `unix_hooks.rs`).
enum NewLink {
    Aya(FdLink),
    Raw(OwnedFd),
}

impl NewLink {
    fn pin(self, program: &'static str, path: &Path) -> Result<PinnedLink, LoadError> {
        match self {
            Self::Aya(link) => link.pin(path).map_err(|source| LoadError::Pin {
                what: format!("link of {program}"),
                path: path.to_owned(),
                source,
            }),
            Self::Raw(fd) => Ok(unix_hooks::pin_link(program, &fd, path)?),
        }
    }
}

/// The network hooks of one leash cgroup. With a pin dir the links are pinned under
/// `links-scope/<cgroup id>/` (and `links` stays empty); else dropping them detaches.
struct ScopeLinks {
    path: PathBuf,
    links: Vec<NewLink>,
}

/// Cgroup programs attached per leash cgroup in attach scope `task` (with the unix
/// hooks where used), so untagged processes elsewhere run none of them.
const SCOPED_PROGRAMS: [&str; 5] = [
    names::programs::NET_CONNECT4,
    names::programs::NET_CONNECT6,
    names::programs::NET_SENDMSG4,
    names::programs::NET_SENDMSG6,
    names::programs::FAMILY_SOCK_CREATE,
];

/// Sizes the maps before load. `maps.net_grants` sizes the host hash and each task's
/// prefix trie (returned: userspace creates those); `maps.tasks` the prefix slots.
fn set_capacities(loader: &mut EbpfLoader<'_>, capacities: &[(&'static str, u32)]) -> u32 {
    let mut net_trie = names::NET_GRANTS_CAPACITY;
    for &(name, capacity) in capacities {
        loader.map_max_entries(name, capacity);
        match name {
            names::NET_GRANTS => {
                loader.map_max_entries(names::NET_HOSTS, capacity);
                net_trie = capacity;
            }
            names::TASKS => {
                loader.map_max_entries(names::NET_PREFIXES, capacity);
                loader.map_max_entries(names::NET_SLOTS, capacity);
            }
            _ => {}
        }
    }
    net_trie
}

/// The tracepoint or hook each program attaches to.
fn attach_point(program: &str) -> &'static str {
    use names::programs as p;
    match program {
        p::PROCESS_NEWTASK => "task_newtask",
        p::PROCESS_EXIT => "sched_process_exit",
        p::EXEC_SCHED_EXEC | p::PROCESS_SCHED_EXEC => "sched_process_exec",
        p::EXEC_BPRM_CHECK => "bprm_check_security",
        p::PROCESS_TASK_ALLOC => "task_alloc",
        p::GUARD_CGROUP => "cgroup_attach_task",
        p::GUARD_LSM_PTRACE => "ptrace_access_check",
        p::GUARD_LSM_TASK_KILL => "task_kill",
        p::GUARD_LSM_BPF => "bpf",
        p::GUARD_LSM_UNLINK => "inode_unlink",
        p::GUARD_LSM_RMDIR => "inode_rmdir",
        p::GUARD_LSM_RENAME => "inode_rename",
        p::FAMILY_LSM_SOCKET_CREATE => "socket_create",
        p::FAMILY_LSM_SOCKET_CONNECT => "socket_connect",
        p::FAMILY_LSM_SOCKET_SENDMSG => "socket_sendmsg",
        p::COMPAT_SYS_ENTER => "sys_enter",
        p::HOST_LSM_FILE_OPEN => "file_open",
        p::URING_LSM_ANON_INODE => "inode_init_security_anon",
        _ => crate::kernel::attach_points::lsm_hook(program),
    }
}

/// The `category:name` tracepoint a program attaches to.
fn tracepoint_of(program: &str) -> (&'static str, &'static str) {
    use names::programs as p;
    let syscall = match program {
        p::SCOPE_CGROUP_ATTACH => return ("cgroup", "cgroup_attach_task"),
        p::FAMILY_SOCKET => "sys_enter_socket",
        p::FAMILY_CONNECT => "sys_enter_connect",
        p::FAMILY_SENDTO => "sys_enter_sendto",
        p::FAMILY_SENDMSG => "sys_enter_sendmsg",
        p::FAMILY_SENDMMSG => "sys_enter_sendmmsg",
        p::FAMILY_CONNECT_EXIT => "sys_exit_connect",
        p::FAMILY_SENDTO_EXIT => "sys_exit_sendto",
        p::FAMILY_SENDMSG_EXIT => "sys_exit_sendmsg",
        p::FAMILY_SENDMMSG_EXIT => "sys_exit_sendmmsg",
        p::GUARD_BPF => "sys_enter_bpf",
        p::GUARD_PTRACE => "sys_enter_ptrace",
        p::GUARD_PROCESS_VM_WRITEV => "sys_enter_process_vm_writev",
        p::GUARD_PIDFD_OPEN => "sys_enter_pidfd_open",
        p::GUARD_PIDFD_GETFD => "sys_enter_pidfd_getfd",
        p::GUARD_KILL => "sys_enter_kill",
        p::GUARD_TKILL => "sys_enter_tkill",
        p::GUARD_TGKILL => "sys_enter_tgkill",
        p::GUARD_RT_SIGQUEUEINFO => "sys_enter_rt_sigqueueinfo",
        p::GUARD_RT_TGSIGQUEUEINFO => "sys_enter_rt_tgsigqueueinfo",
        p::GUARD_UNLINK => "sys_enter_unlink",
        p::GUARD_UNLINKAT => "sys_enter_unlinkat",
        p::GUARD_RMDIR => "sys_enter_rmdir",
        p::GUARD_RENAME => "sys_enter_rename",
        p::GUARD_RENAMEAT => "sys_enter_renameat",
        p::GUARD_RENAMEAT2 => "sys_enter_renameat2",
        p::GUARD_UMOUNT => "sys_enter_umount",
        p::GUARD_CLONE => "sys_enter_clone",
        p::GUARD_CLONE3 => "sys_enter_clone3",
        p::GUARD_FORK => "sys_enter_fork",
        p::GUARD_VFORK => "sys_enter_vfork",
        p::HOST_OPEN_EXIT => "sys_exit_open",
        p::HOST_OPENAT_EXIT => "sys_exit_openat",
        p::HOST_OPENAT2_EXIT => "sys_exit_openat2",
        p::HOST_OPEN_BY_HANDLE_AT_EXIT => "sys_exit_open_by_handle_at",
        p::HOST_CREAT_EXIT => "sys_exit_creat",
        p::URING_SETUP => "sys_enter_io_uring_setup",
        _ => crate::kernel::attach_points::tracepoint(program),
    };
    ("syscalls", syscall)
}

impl Enforcer {
    /// Loads the object, chooses the backend and attaches every program of it.
    #[expect(
        clippy::too_many_lines,
        reason = "one load sequence, read top to bottom; each step is a call"
    )]
    pub fn load(opts: &LoadOptions) -> Result<Self, LoadError> {
        let offsets = kernel_offsets::from_vmlinux()?;
        let btf = Btf::from_sys_fs().map_err(LoadError::Btf)?;
        let level = opts.kernel_log_level.unwrap_or(log::LevelFilter::Off) as u8;
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&btf))
            .override_global(GLOBAL_NAME, &offsets, true)
            .override_global(aya_log::LEVEL, &level, false);
        let net_trie = set_capacities(&mut loader, &opts.capacities);
        let map_pins: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => {
                mounts::ensure_bpffs()?;
                for sub in ["maps", "links"] {
                    let path = dir.join(sub);
                    fs::create_dir_all(&path)
                        .map_err(|source| LoadError::PinDir { path, source })?;
                }
                names::ALL
                    .iter()
                    .map(|n| (*n, dir.join("maps").join(n)))
                    .collect()
            }
            None => Vec::new(),
        };
        // A map already pinned there is reused as is: its tasks, grants and tags survive.
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(LoadError::Object)?;
        // Before the log reader and the control plane take theirs.
        let map_fds = unix_hooks::map_fds(&ebpf)?;
        let logger = match EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("kernel log records unavailable: {e}");
                None
            }
        };
        let maps = Maps::take(&mut ebpf, net_trie)?;
        let ring = ebpf
            .take_map(names::EVENTS)
            .ok_or(MapsError::Missing(names::EVENTS))?;
        let ring = RingBuf::<MapData>::try_from(ring).map_err(|source| MapsError::Type {
            map: names::EVENTS,
            source,
        })?;

        let (backend, why) = choose(&mut ebpf, &btf, opts.backend)?;
        tracing::info!(%backend, reason = %why, "enforcement backend chosen");
        // The lsm backend decides unix names in its socket hooks.
        let unix = match backend {
            Backend::Portable => {
                UnixHooks::load(EBPF_OBJECT, &map_fds, &btf, offsets.sock_addr_uaddrlen != 0)?
            }
            Backend::Lsm => None,
        };
        // What is pinned, kept to pin again (restore_pins).
        let pinned_maps: Vec<(PathBuf, OwnedFd)> = map_fds
            .into_iter()
            .filter_map(|(name, fd)| {
                let (_, path) = map_pins.iter().find(|(n, _)| *n == name)?;
                Some((path.clone(), fd))
            })
            .collect();

        let cgroup = mounts::cgroup2_root()?;
        let task_scope = opts.attach_scope == AttachScope::Task;
        if task_scope {
            scope::check_tracepoint_format().map_err(LoadError::Scope)?;
        }
        let tracefs = mounts::ensure_tracefs()?;
        let guard = task_scope.then_some(names::programs::SCOPE_CGROUP_ATTACH);
        // Tagging first, so nothing can be created untagged once enforcement starts.
        let programs: Vec<&'static str> = COMMON_PROGRAMS
            .into_iter()
            .chain(backend.programs(unix.is_some()))
            .chain(guard)
            .filter(|p| crate::kernel::attach_points::available(p, &tracefs))
            .collect();
        let keep = opts.pin_dir.is_some();
        let (links, unix_links) = attach_root(
            &mut ebpf,
            &btf,
            &programs,
            unix.as_ref(),
            &cgroup,
            keep,
            task_scope,
        )?;
        let mut enforcer = Self {
            ebpf,
            backend,
            why,
            attached: programs,
            cgroup,
            maps,
            events: Some(EventReader::new(ring)),
            logger,
            scope: opts.attach_scope,
            scopes: HashMap::new(),
            pin_dir: opts.pin_dir.clone(),
            held: Vec::new(),
            pinned_maps,
            unix,
            unix_links,
        };
        enforcer.take_over(links)?;
        Ok(enforcer)
    }

    /// Pins again every root link and map of this daemon whose pin is gone (removed
    /// under bpffs by a path the guard does not recognise, or while its caller was
    /// being killed), so a daemon started next still finds them; returns those paths.
    /// A link pin whose `-new` twin exists is a hand-over in progress: left alone.
    pub fn restore_pins(&self) -> Vec<PathBuf> {
        let mut restored = Vec::new();
        for (path, fd) in self.held.iter().chain(&self.pinned_maps) {
            let mut twin = path.as_os_str().to_owned();
            twin.push("-new");
            if path.symlink_metadata().is_ok() || Path::new(&twin).symlink_metadata().is_ok() {
                continue;
            }
            match bpf_syscall::pin(fd.as_fd(), path) {
                Ok(()) => restored.push(path.clone()),
                Err(e) => tracing::error!(path = %path.display(), "cannot pin again: {e}"),
            }
        }
        restored
    }

    /// Replaces a previous daemon's pinned links with `links` (and, in attach scope
    /// `task`, its leash cgroups' links with this binary's programs), with no gap.
    fn take_over(&mut self, links: Links) -> Result<(), LoadError> {
        if self.scope == AttachScope::Task {
            self.adopt_scopes()?;
            // Tagged processes of a root-scope generation: into their leash cgroups
            // before the root hooks go.
            for tid in self.maps.tagged_threads() {
                if let Err(e) = self.enter_scope(tid) {
                    tracing::warn!(
                        tid,
                        "cannot move a tagged process into its leash cgroup: {e}"
                    );
                }
            }
        }
        if let Some(dir) = &self.pin_dir {
            self.held = hand_over(&dir.join("links"), links)?;
            if self.scope == AttachScope::Root {
                // A task-scope generation's per-cgroup hooks: the root hooks cover them.
                cleanup_scopes(dir, &self.cgroup)?;
                self.maps.clear_scopes();
            }
        }
        Ok(())
    }

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
            scope::move_into(&target, pid).map_err(|e| {
                LoadError::Scope(format!("cannot move {pid} into {}: {e}", target.display()))
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
        let err = |what: &str, e: std::io::Error| LoadError::Scope(format!("{what}: {e}"));
        let cur =
            scope::cgroup_of(&self.cgroup, pid).map_err(|e| err("cgroup of the process", e))?;
        let target = scope::leash_cgroup_for(&self.cgroup, &cur);
        if let Err(e) = fs::create_dir(&target)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(err(&format!("cannot create {}", target.display()), e));
        }
        let id = scope::cgroup_id(&target).map_err(|e| err("cgroup id", e))?;
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
        for program in SCOPED_PROGRAMS {
            let link = attach_cgroup(&mut self.ebpf, program, path, true)?
                .ok_or(LoadError::MissingProgram(program))?;
            links.push((program, NewLink::Aya(link)));
        }
        if let Some(unix) = &self.unix {
            for (program, link) in unix.attach(path)? {
                links.push((program, NewLink::Raw(link)));
            }
        }
        let links = match &self.pin_dir {
            Some(dir) => {
                let dir = scope_dir(dir).join(id.to_string());
                fs::create_dir_all(&dir).map_err(|source| LoadError::PinDir {
                    path: dir.clone(),
                    source,
                })?;
                // Not held: an emptied leash cgroup's links must go with their pins.
                drop(hand_over(&dir, links)?);
                Vec::new()
            }
            None => links.into_iter().map(|(_, l)| l).collect(),
        };
        self.scopes.insert(
            id,
            ScopeLinks {
                path: path.to_owned(),
                links,
            },
        );
        Ok(())
    }

    /// Re-attaches this binary's programs to the leash cgroups a previous daemon
    /// pinned, replacing its links with no gap; a pin whose cgroup is gone is removed.
    fn adopt_scopes(&mut self) -> Result<(), LoadError> {
        let Some(pin_dir) = self.pin_dir.clone() else {
            return Ok(());
        };
        let Ok(entries) = fs::read_dir(scope_dir(&pin_dir)) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let id = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            if let Some((id, path)) =
                id.and_then(|id| Some((id, scope::find_cgroup(&self.cgroup, id)?)))
            {
                self.attach_scope_hooks(id, &path)?;
            } else {
                remove_pins(&entry.path())?;
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
            drop(s.links);
            if let Some(dir) = &self.pin_dir
                && let Err(e) = remove_pins(&scope_dir(dir).join(id.to_string()))
            {
                tracing::warn!("cannot unpin the hooks of {}: {e}", s.path.display());
            }
            if s.path != self.cgroup && s.path.file_name().is_some_and(|n| n == scope::LEASH_CGROUP)
            {
                let _ = fs::remove_dir(&s.path);
            }
        }
    }

    /// Leash cgroups with the network hooks attached.
    #[must_use]
    pub fn scope_cgroups(&self) -> Vec<PathBuf> {
        self.scopes.values().map(|s| s.path.clone()).collect()
    }

    #[must_use]
    pub const fn backend(&self) -> Backend {
        self.backend
    }

    /// Why [`Self::backend`] was chosen.
    #[must_use]
    pub fn backend_reason(&self) -> &str {
        &self.why
    }

    #[must_use]
    pub fn attached(&self) -> &[&'static str] {
        &self.attached
    }

    /// The cgroup2 root the network hooks are attached to.
    #[must_use]
    pub const fn cgroup(&self) -> &PathBuf {
        &self.cgroup
    }

    #[must_use]
    pub const fn maps(&self) -> &Maps {
        &self.maps
    }

    pub const fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// Cumulative run time and run count of each attached program, as the kernel
    /// counts them while `kernel.bpf_stats_enabled` is 1 (else both stay 0).
    #[must_use]
    pub fn program_stats(&self) -> Vec<(&'static str, std::time::Duration, u64)> {
        let mut stats: Vec<_> = self
            .attached
            .iter()
            .filter_map(|&name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some((name, info.run_time(), info.run_count()))
            })
            .collect();
        stats.extend(self.unix.iter().flat_map(UnixHooks::stats));
        stats
    }

    /// Whether unix names are refused by the cgroup unix hooks (EPERM) rather than
    /// by syscall tracepoints (portable, before Linux 6.7) or LSM hooks.
    #[must_use]
    pub const fn unix_hooks(&self) -> bool {
        self.unix.is_some()
    }

    /// What a tagged process meets here, for `leash status`.
    #[must_use]
    pub const fn guarantees(&self) -> &'static [&'static str] {
        self.backend.guarantees(self.unix_hooks())
    }

    /// The event stream; there is one reader.
    pub const fn take_events(&mut self) -> Option<EventReader> {
        self.events.take()
    }

    /// The kernel log record reader, for a flush loop.
    pub const fn take_logger(&mut self) -> Option<EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }
}

/// Picks the backend. `auto` tries the LSM programs and falls back on any refusal.
fn choose(
    ebpf: &mut Ebpf,
    btf: &Btf,
    choice: BackendChoice,
) -> Result<(Backend, String), LoadError> {
    if choice == BackendChoice::Portable {
        return Ok((Backend::Portable, "requested".into()));
    }
    let fail = |why: String| match choice {
        BackendChoice::Lsm => Err(LoadError::LsmUnavailable(why)),
        _ => Ok((Backend::Portable, format!("lsm unavailable: {why}"))),
    };
    let lsms = mounts::ensure_securityfs()
        .map_err(|e| e.to_string())
        .and_then(|fs| {
            fs::read_to_string(fs.join("lsm")).map_err(|e| format!("cannot read the LSM list: {e}"))
        });
    let lsms = match lsms {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    if !lsms.trim().split(',').any(|l| l == "bpf") {
        return fail(format!(
            "bpf is not among the active LSMs ({})",
            lsms.trim()
        ));
    }
    for program in Backend::Lsm.programs(false) {
        // Only the LSM programs tell whether BPF LSM works; the others load on attach.
        if !matches!(ebpf.program(program), Some(aya::programs::Program::Lsm(_))) {
            continue;
        }
        if let Err(e) = load_lsm(ebpf, btf, program) {
            // aya appends the verifier log, which is empty for an EPERM refusal.
            let e = e.to_string();
            let e = e
                .trim_end()
                .trim_end_matches("Verifier output:")
                .trim_end()
                .trim_end_matches('.');
            return fail(format!("the kernel refused {program}: {e}"));
        }
    }
    Ok((
        Backend::Lsm,
        if choice == BackendChoice::Lsm {
            "requested"
        } else {
            "BPF LSM available"
        }
        .into(),
    ))
}

fn load_lsm(ebpf: &mut Ebpf, btf: &Btf, program: &'static str) -> Result<(), LoadError> {
    let prog: &mut Lsm = ebpf
        .program_mut(program)
        .ok_or(LoadError::MissingProgram(program))?
        .try_into()
        .map_err(|source| LoadError::Load { program, source })?;
    prog.load(attach_point(program), btf)
        .map_err(|source| LoadError::Load { program, source })
}

/// Attaches `programs` at the cgroup2 root (the network and unix hooks only in attach
/// scope `root`). With `keep`, returns the links to pin; else aya's stay in `ebpf`
/// and the unix hooks' are returned apart, to hold.
fn attach_root(
    ebpf: &mut Ebpf,
    btf: &Btf,
    programs: &[&'static str],
    unix: Option<&UnixHooks>,
    cgroup: &Path,
    keep: bool,
    task_scope: bool,
) -> Result<(Links, Vec<OwnedFd>), LoadError> {
    let mut links = Vec::new();
    for &program in programs {
        // In attach scope `task` the network hooks go to each leash cgroup instead.
        if (task_scope && SCOPED_PROGRAMS.contains(&program))
            || unix_hooks::PROGRAMS.iter().any(|(p, _)| *p == program)
        {
            continue;
        }
        if let Some(link) = attach(ebpf, btf, program, cgroup, keep)? {
            links.push((program, NewLink::Aya(link)));
        }
    }
    let mut unix_links = Vec::new();
    if let Some(unix) = unix.filter(|_| !task_scope) {
        for (program, link) in unix.attach(cgroup)? {
            if keep {
                links.push((program, NewLink::Raw(link)));
            } else {
                unix_links.push(link);
            }
        }
    }
    Ok((links, unix_links))
}

/// Loads (unless already loaded) and attaches one program. With `keep`, the link is
/// taken out of the program so it can be pinned and outlive this process.
fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &'static str,
    cgroup: &Path,
    keep: bool,
) -> Result<Option<FdLink>, LoadError> {
    let load = |source| LoadError::Load { program, source };
    let attach_err = |source| LoadError::Attach { program, source };
    let prog = ebpf
        .program_mut(program)
        .ok_or(LoadError::MissingProgram(program))?;
    let link = match prog {
        aya::programs::Program::BtfTracePoint(p) => {
            p.load(attach_point(program), btf).map_err(load)?;
            let id = p.attach().map_err(attach_err)?;
            keep.then(|| p.take_link(id).map(FdLink::from))
                .transpose()
                .map_err(attach_err)?
        }
        aya::programs::Program::Lsm(p) => {
            // Loaded while choosing the backend.
            let id = p.attach().map_err(attach_err)?;
            keep.then(|| p.take_link(id).map(FdLink::from))
                .transpose()
                .map_err(attach_err)?
        }
        aya::programs::Program::TracePoint(p) => {
            p.load().map_err(load)?;
            let (category, name) = tracepoint_of(program);
            let id = p.attach(category, name).map_err(attach_err)?;
            // A bpf_link (>= 5.15) can be pinned; an older perf-event attachment not.
            keep.then(|| p.take_link(id).map(FdLink::try_from))
                .transpose()
                .map_err(attach_err)?
                .transpose()
                .map_err(|e: LinkError| LoadError::Handover {
                    path: PathBuf::from(format!("{category}:{name}")),
                    reason: format!("{program}: the tracepoint link is not a BPF link: {e}"),
                })?
        }
        aya::programs::Program::CgroupSockAddr(_) | aya::programs::Program::CgroupSock(_) => {
            attach_cgroup(ebpf, program, cgroup, keep)?
        }
        _ => return Err(LoadError::MissingProgram(program)),
    };
    Ok(link)
}

/// Loads (once) and attaches one cgroup `sock_addr` or `sock` program to `cgroup`.
fn attach_cgroup(
    ebpf: &mut Ebpf,
    program: &'static str,
    cgroup: &Path,
    keep: bool,
) -> Result<Option<FdLink>, LoadError> {
    let load = |source| LoadError::Load { program, source };
    let attach_err = |source| LoadError::Attach { program, source };
    // Loaded once, attached to each leash cgroup in attach scope `task`. Single:
    // link-based attachment still coexists with other programs here, while
    // AllowMultiple is refused by BPF_LINK_CREATE (EINVAL, seen on Linux 6.18).
    // The two program types share these methods but no trait.
    macro_rules! attach {
        ($p:expr) => {{
            if $p.fd().is_err() {
                $p.load().map_err(load)?;
            }
            let id = $p
                .attach(cgroup_dir(cgroup)?, CgroupAttachMode::Single)
                .map_err(attach_err)?;
            keep.then(|| cgroup_link(program, cgroup, $p.take_link(id).map_err(attach_err)?))
                .transpose()
        }};
    }
    match ebpf.program_mut(program) {
        Some(aya::programs::Program::CgroupSockAddr(p)) => attach!(p),
        Some(aya::programs::Program::CgroupSock(p)) => attach!(p),
        _ => Err(LoadError::MissingProgram(program)),
    }
}

fn cgroup_dir(cgroup: &Path) -> Result<fs::File, LoadError> {
    fs::File::open(cgroup).map_err(|source| LoadError::Cgroup {
        path: cgroup.to_owned(),
        source,
    })
}

/// A cgroup link as a pinnable [`FdLink`].
fn cgroup_link<L>(program: &str, cgroup: &Path, link: L) -> Result<FdLink, LoadError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    FdLink::try_from(link).map_err(|e| LoadError::Handover {
        path: cgroup.to_owned(),
        reason: format!("{program} was not attached with a link: {e}"),
    })
}

/// Pins the new links and detaches the previous daemon's, with no gap: every new link
/// is attached and pinned (as `NAME-new`) before any old one is let go; then each new
/// pin takes its final name. A crash at any point leaves at least one generation pinned.
/// Returns a descriptor of each new link, by its final pin path, for the caller to hold.
fn hand_over(dir: &Path, links: Links) -> Result<Vec<(PathBuf, OwnedFd)>, LoadError> {
    let mut staged = Vec::new();
    let mut held = Vec::new();
    for (program, link) in links {
        // bpffs refuses names with a dot, hence the dash.
        let path = dir.join(format!("{program}-new"));
        detach_pin(&path)?;
        drop(link.pin(program, &path)?);
        let fd = bpf_syscall::get_pinned(&path).map_err(|e| LoadError::Handover {
            path: path.clone(),
            reason: e.to_string(),
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
    for entry in old.flatten() {
        let path = entry.path();
        if !staged.iter().any(|(_, p)| *p == path) {
            detach_pin(&path)?;
        }
    }
    for (program, path) in staged {
        let target = dir.join(program);
        fs::rename(&path, &target).map_err(|e| LoadError::Handover {
            path: target.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(held)
}

/// Unpins a link and drops it, which detaches it. Absent pins are fine.
fn detach_pin(path: &Path) -> Result<(), LoadError> {
    if !path.exists() {
        return Ok(());
    }
    let handover = |reason: String| LoadError::Handover {
        path: path.to_owned(),
        reason,
    };
    let link = PinnedLink::from_pin(path).map_err(|e| handover(e.to_string()))?;
    drop(link.unpin().map_err(|e| handover(e.to_string()))?);
    Ok(())
}

/// Where the links of the leash cgroups are pinned, one directory per cgroup id.
fn scope_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links-scope")
}

/// Unpins (detaches) every link pinned in `dir` and removes it.
fn remove_pins(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
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

/// Detaches the hooks of every leash cgroup pinned under `pin_dir` and removes the
/// cgroups no process is left in.
fn cleanup_scopes(pin_dir: &Path, root: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    let dir = scope_dir(pin_dir);
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            removed.extend(remove_pins(&entry.path())?);
            let cgroup = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse().ok())
                .and_then(|id| scope::find_cgroup(root, id));
            if let Some(cgroup) = cgroup
                && cgroup.file_name().is_some_and(|n| n == scope::LEASH_CGROUP)
                && scope::is_empty(&cgroup)
            {
                let _ = fs::remove_dir(cgroup);
            }
        }
    }
    let _ = fs::remove_dir(dir);
    Ok(removed)
}

/// Removes everything a daemon pinned under `pin_dir`: links first (which detaches
/// the programs), then the maps. Enforcement stops; tagged processes run free.
pub fn cleanup(pin_dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut removed = Vec::new();
    if let Ok(root) = mounts::cgroup2_root() {
        removed.extend(cleanup_scopes(pin_dir, &root)?);
    }
    let links = pin_dir.join("links");
    if let Ok(entries) = fs::read_dir(&links) {
        for entry in entries.flatten() {
            detach_pin(&entry.path())?;
            removed.push(entry.path());
        }
    }
    let maps = pin_dir.join("maps");
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
