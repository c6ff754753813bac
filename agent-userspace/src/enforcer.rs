//! Loads the kernel programs, picks a backend and attaches it.

use std::{fs, path::PathBuf};

use agent_common::{maps as names, offsets::GLOBAL_NAME};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSockAddr, Lsm, ProgramError},
};
use aya_log::EbpfLogger;

use crate::{
    EBPF_OBJECT,
    backend::{Backend, BackendChoice, COMMON_PROGRAMS},
    events::EventReader,
    kernel_offsets::{self, OffsetError},
    maps::{Maps, MapsError},
    mounts::{self, MountError},
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
}

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub backend: BackendChoice,
    /// Level of the kernel-side aya-log statements; `Off` makes them cost nothing.
    pub kernel_log_level: Option<log::LevelFilter>,
}

/// The loaded and attached programs. Dropping it detaches them.
pub struct Enforcer {
    // Holds the programs, hence the links that keep them attached.
    _ebpf: Ebpf,
    backend: Backend,
    why: String,
    attached: Vec<&'static str>,
    cgroup: PathBuf,
    maps: Maps,
    events: Option<EventReader>,
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
}

/// The tracepoint or hook each program attaches to.
const fn attach_point(program: &str) -> &'static str {
    use names::programs as p;
    match program.as_bytes() {
        b if eq(b, p::PROCESS_NEWTASK) => "task_newtask",
        b if eq(b, p::PROCESS_EXIT) => "sched_process_exit",
        b if eq(b, p::EXEC_SCHED_EXEC) => "sched_process_exec",
        b if eq(b, p::EXEC_BPRM_CHECK) => "bprm_check_security",
        b if eq(b, p::PROCESS_TASK_ALLOC) => "task_alloc",
        _ => "",
    }
}

const fn eq(a: &[u8], b: &str) -> bool {
    let b = b.as_bytes();
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Enforcer {
    /// Loads the object, chooses the backend and attaches every program of it.
    pub fn load(opts: &LoadOptions) -> Result<Self, LoadError> {
        let offsets = kernel_offsets::from_vmlinux()?;
        let btf = Btf::from_sys_fs().map_err(LoadError::Btf)?;
        let level = opts.kernel_log_level.unwrap_or(log::LevelFilter::Off) as u8;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(GLOBAL_NAME, &offsets, true)
            .override_global(aya_log::LEVEL, &level, false)
            .load(EBPF_OBJECT)
            .map_err(LoadError::Object)?;
        let logger = match EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("kernel log records unavailable: {e}");
                None
            }
        };
        let maps = Maps::take(&mut ebpf)?;
        let ring = ebpf
            .take_map(names::EVENTS)
            .ok_or(MapsError::Missing(names::EVENTS))?;
        let ring = RingBuf::<MapData>::try_from(ring).map_err(|source| MapsError::Type {
            map: names::EVENTS,
            source,
        })?;

        let (backend, why) = choose(&mut ebpf, &btf, opts.backend)?;
        tracing::info!(%backend, reason = %why, "enforcement backend chosen");

        let cgroup = mounts::cgroup2_root()?;
        let mut attached = Vec::new();
        // Tagging first, so nothing can be created untagged once enforcement starts.
        for program in COMMON_PROGRAMS
            .into_iter()
            .chain(backend.programs().iter().copied())
        {
            attach(&mut ebpf, &btf, program, &cgroup)?;
            attached.push(program);
        }
        Ok(Self {
            _ebpf: ebpf,
            backend,
            why,
            attached,
            cgroup,
            maps,
            events: Some(EventReader::new(ring)),
            logger,
        })
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
    for program in Backend::Lsm.programs() {
        if let Err(e) = load_lsm(ebpf, btf, program) {
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

fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &'static str,
    cgroup: &PathBuf,
) -> Result<(), LoadError> {
    let load = |source| LoadError::Load { program, source };
    let attach_err = |source| LoadError::Attach { program, source };
    let prog = ebpf
        .program_mut(program)
        .ok_or(LoadError::MissingProgram(program))?;
    match prog {
        aya::programs::Program::BtfTracePoint(p) => {
            p.load(attach_point(program), btf).map_err(load)?;
            p.attach().map_err(attach_err)?;
        }
        aya::programs::Program::Lsm(p) => {
            // Loaded while choosing the backend.
            p.attach().map_err(attach_err)?;
        }
        aya::programs::Program::CgroupSockAddr(p) => {
            p.load().map_err(load)?;
            let dir = fs::File::open(cgroup).map_err(|source| LoadError::Cgroup {
                path: cgroup.clone(),
                source,
            })?;
            // Single: link-based attachment still coexists with other programs here,
            // while AllowMultiple is refused by BPF_LINK_CREATE (platform-notes.md).
            p.attach(dir, CgroupAttachMode::Single)
                .map_err(attach_err)?;
        }
        _ => return Err(LoadError::MissingProgram(program)),
    }
    Ok(())
}

// Keep the typed program imports referenced for readers of this module.
#[allow(dead_code)]
type _Types = (BtfTracePoint, CgroupSockAddr);
