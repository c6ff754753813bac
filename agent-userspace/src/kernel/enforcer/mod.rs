//! Loads the kernel programs, picks a backend and attaches it: the facade the daemon
//! holds. The steps live in the submodules: choosing the backend, attaching each
//! program of the program table, the pin tree, and the per-cgroup hooks of attach
//! scope `task`.

use std::{collections::HashMap, os::fd::OwnedFd, path::PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    pin::PinError,
    programs::{ProgramError, links::LinkError},
};
use aya_log::EbpfLogger;
use leash_common::{maps as names, offsets::GLOBAL_NAME};

use crate::{
    EBPF_OBJECT,
    kernel::{
        AttachScope, Backend, BackendChoice,
        events::EventReader,
        kernel_offsets::{self, OffsetError},
        kfunc::{self, NoKfunc},
        maps::{Maps, MapsError},
        mounts::{self, MountError},
        programs,
        scope::{self, ScopeError},
        unix_hooks::{self, UnixHookError, UnixHooks},
    },
};

mod attach;
mod choose;
mod pins;
mod scopes;

pub use choose::LsmUnavailable;
pub use pins::cleanup;

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
    #[error("cannot open cgroup {}: {source}", path.display())]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the lsm backend was requested but cannot run here: {0}; boot with lsm=...,bpf (CONFIG_BPF_LSM=y) or use --backend portable"
    )]
    LsmUnavailable(#[source] LsmUnavailable),
    #[error("cannot pin link of {program} at {}: {source}", path.display())]
    Pin {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: PinError,
    },
    #[error("cannot hand over the pinned link {}: {source}", path.display())]
    Handover {
        path: PathBuf,
        #[source]
        source: HandoverError,
    },
    #[error("attach scope task: {0}")]
    Scope(#[from] ScopeError),
    #[error("cannot prepare the pin directory {}: {source}", path.display())]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a link could not be handed over to the pin tree.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("{program}: the tracepoint link is not a BPF link: {source}")]
    TracepointLink {
        program: &'static str,
        #[source]
        source: LinkError,
    },
    #[error("{program} was not attached with a link: {source}")]
    CgroupLink {
        program: &'static str,
        #[source]
        source: LinkError,
    },
    #[error(transparent)]
    Io(std::io::Error),
    #[error(transparent)]
    Link(LinkError),
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
    /// Tests: behave as on a kernel without the kfunc `bpf_send_signal_task` (no kill
    /// at a cgroup move, nor of a child that cannot be tagged).
    pub without_kfuncs: bool,
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
    /// Why [`Self::attach_scope`] was chosen.
    scope_reason: String,
    /// Whether the kernel programs kill a tagged process moved out of its leash
    /// cgroups at the move (`bpf_send_signal_task`), or why not.
    kill_at_move: Result<(), NoKfunc>,
    /// Leash cgroups with the network hooks attached, by cgroup id.
    scopes: HashMap<u64, scopes::ScopeLinks>,
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
                loader.map_max_entries(names::DNS_TARGETS, capacity);
            }
            _ => {}
        }
    }
    net_trie
}

/// The attach scope to use and why: `auto` is `task` where a tagged process moved
/// out of its leash cgroups is killed at the move and leash can make cgroups, else
/// `root` (a process moved out would leave the hooks until the daemon's kill).
/// `root_tasks`: live tagged processes a root-scope generation left. Their sockets
/// belong to cgroups outside every leash cgroup, where task-scope hooks never run, so
/// only the root hooks enforce them: `root` until a restart finds none.
fn resolve_scope(
    asked: AttachScope,
    kill_at_move: &Result<(), NoKfunc>,
    cgroup: &std::path::Path,
    root_tasks: usize,
) -> (AttachScope, String) {
    if root_tasks > 0 && asked != AttachScope::Root {
        return (
            AttachScope::Root,
            format!(
                "{asked}: {root_tasks} processes of tasks started in attach scope root are \
                 running, and their sockets are outside the leash cgroups; {asked} at a \
                 restart once they have ended"
            ),
        );
    }
    match asked {
        AttachScope::Root | AttachScope::Task => (asked, "requested".into()),
        AttachScope::Auto => match (kill_at_move, scope::layout_allows_children(cgroup)) {
            (Ok(()), Ok(())) => (
                AttachScope::Task,
                format!(
                    "auto: {} kills a process moved out at the move",
                    kfunc::SEND_SIGNAL_TASK
                ),
            ),
            (Err(why), _) => (
                AttachScope::Root,
                format!("auto: no kill at a cgroup move ({why})"),
            ),
            (_, Err(why)) => (AttachScope::Root, format!("auto: {why}")),
        },
    }
}

/// [`resolve_scope`] with what the pinned state says of a previous generation,
/// logged (a warning when live tasks keep `root` against the config).
fn choose_scope(
    opts: &LoadOptions,
    kill_at_move: &Result<(), NoKfunc>,
    cgroup: &std::path::Path,
    maps: &Maps,
) -> (AttachScope, String) {
    let root_tasks = match &opts.pin_dir {
        Some(dir) if pins::root_scoped(dir) => maps.live_tagged_processes(),
        _ => 0,
    };
    let (scope, reason) = resolve_scope(opts.attach_scope, kill_at_move, cgroup, root_tasks);
    if root_tasks > 0 && opts.attach_scope != AttachScope::Root {
        tracing::warn!(%scope, %reason, "attach scope chosen");
    } else {
        tracing::info!(%scope, %reason, "attach scope chosen");
    }
    (scope, reason)
}

impl Enforcer {
    /// Loads the object, chooses the backend and attaches every program of it.
    pub fn load(opts: &LoadOptions) -> Result<Self, LoadError> {
        let mut offsets = kernel_offsets::from_vmlinux()?;
        crate::grants::set_btrfs_identity(offsets.btrfs_vfs_inode != 0);
        let btf = Btf::from_sys_fs().map_err(LoadError::Btf)?;
        let object =
            kfunc::probe(&btf, opts.without_kfuncs).and_then(|id| kfunc::patch(EBPF_OBJECT, id));
        let kill_at_move = object.as_ref().map(|_| ()).map_err(Clone::clone);
        offsets.send_signal_task = u32::from(kill_at_move.is_ok());
        match &kill_at_move {
            Ok(()) => tracing::info!(
                "{} found: moved and untaggable processes are killed in the kernel",
                kfunc::SEND_SIGNAL_TASK
            ),
            Err(why) => tracing::info!("no kill in the kernel at a cgroup move: {why}"),
        }
        let object = object.unwrap_or(std::borrow::Cow::Borrowed(EBPF_OBJECT));
        let cgroup = mounts::cgroup2_root()?;
        let level = opts.kernel_log_level.unwrap_or(log::LevelFilter::Off) as u8;
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&btf))
            .override_global(GLOBAL_NAME, &offsets, true)
            .override_global(aya_log::LEVEL, &level, false);
        let net_trie = set_capacities(&mut loader, &opts.capacities);
        let map_pins = match &opts.pin_dir {
            Some(dir) => pins::prepare(dir)?,
            None => Vec::new(),
        };
        // A map already pinned there is reused as is: its tasks, grants and tags survive.
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(&object).map_err(LoadError::Object)?;
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
        let (attach_scope, scope_reason) = choose_scope(opts, &kill_at_move, &cgroup, &maps);
        let ring = ebpf
            .take_map(names::EVENTS)
            .ok_or(MapsError::Missing(names::EVENTS))?;
        let ring = RingBuf::<MapData>::try_from(ring).map_err(|source| MapsError::Type {
            map: names::EVENTS,
            source,
        })?;

        let (backend, why) = choose::choose(&mut ebpf, &btf, opts.backend)?;
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

        let task_scope = attach_scope == AttachScope::Task;
        let tracefs = mounts::ensure_tracefs()?;
        let programs: Vec<&'static programs::Program> =
            programs::selected(backend, unix.is_some(), attach_scope, &tracefs).collect();
        let keep = opts.pin_dir.is_some();
        let (links, unix_links) = attach::attach_root(
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
            attached: programs.iter().map(|p| p.name).collect(),
            cgroup,
            maps,
            events: Some(EventReader::new(ring)),
            logger,
            scope: attach_scope,
            scope_reason,
            kill_at_move,
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

    /// Replaces a previous daemon's pinned links with `links` (and, in attach scope
    /// `task`, its leash cgroups' links with this binary's programs), with no gap. A
    /// root-scope generation's live tasks keep this one in `root` (`resolve_scope`), so
    /// every tagged process of a task-scope generation is in a leash cgroup already.
    fn take_over(&mut self, links: attach::Links) -> Result<(), LoadError> {
        if self.scope == AttachScope::Task {
            self.adopt_scopes()?;
        }
        if let Some(dir) = &self.pin_dir {
            self.held = pins::hand_over(&dir.join(pins::LINKS), links)?;
            if self.scope == AttachScope::Root {
                // A task-scope generation's per-cgroup hooks: the root hooks cover them.
                pins::cleanup_scopes(dir, &self.cgroup)?;
                self.maps.clear_scopes();
            }
        }
        Ok(())
    }

    #[must_use]
    pub const fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether a tagged process moved out of its leash cgroups is killed at the move
    /// (else the daemon kills it when it reads the escape event), and why not.
    pub fn kill_at_move(&self) -> Result<(), &NoKfunc> {
        self.kill_at_move.as_ref().copied()
    }

    /// Why [`Self::attach_scope`] was chosen (`auto` says which case).
    #[must_use]
    pub fn attach_scope_reason(&self) -> &str {
        &self.scope_reason
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
    pub fn guarantees(&self) -> Vec<&'static str> {
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
