//! Loading and attaching one program at the point the program table gives it.

use std::{
    fs,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf,
    programs::{
        CgroupAttachMode, Lsm, Program as AyaProgram,
        links::{FdLink, LinkError, PinnedLink},
    },
};

use super::{HandoverError, LoadError};
use crate::kernel::{
    programs::{Attach, Program},
    unix_hooks::{self, UnixHooks},
};

/// New links by program, to hand over.
pub(super) type Links = Vec<(&'static str, NewLink)>;

/// A link to pin or hold: aya's, or one of the unix hooks (made by `unix_hooks.rs`).
pub(super) enum NewLink {
    Aya(FdLink),
    Raw(OwnedFd),
}

impl NewLink {
    pub(super) fn pin(self, program: &'static str, path: &Path) -> Result<PinnedLink, LoadError> {
        match self {
            Self::Aya(link) => link.pin(path).map_err(|source| LoadError::Pin {
                program,
                path: path.to_owned(),
                source,
            }),
            Self::Raw(fd) => Ok(unix_hooks::pin_link(program, &fd, path)?),
        }
    }
}

/// Loads an LSM program for its hook: the lsm backend is chosen only if every one
/// loads.
pub(super) fn load_lsm(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &'static str,
    hook: &str,
) -> Result<(), LoadError> {
    let prog: &mut Lsm = ebpf
        .program_mut(program)
        .ok_or(LoadError::MissingProgram(program))?
        .try_into()
        .map_err(|source| LoadError::Load { program, source })?;
    prog.load(hook, btf)
        .map_err(|source| LoadError::Load { program, source })
}

/// Attaches `programs` at the cgroup2 root (the programs that follow the attach scope
/// only in attach scope `root`). With `keep`, returns the links to pin; else aya's
/// stay in `ebpf` and the unix hooks' are returned apart, to hold.
pub(super) fn attach_root(
    ebpf: &mut Ebpf,
    btf: &Btf,
    programs: &[&'static Program],
    unix: Option<&UnixHooks>,
    cgroup: &Path,
    keep: bool,
    task_scope: bool,
) -> Result<(Links, Vec<OwnedFd>), LoadError> {
    // In attach scope `task` the network hooks go to each leash cgroup instead; the
    // unix hooks are attached by `UnixHooks` below.
    let here = |p: &&&Program| !(matches!(p.attach, Attach::Unix(_)) || task_scope && p.scoped);
    // Every program is loaded (verified) before the first is attached: from the first
    // attach until `pins::hand_over` detaches a previous daemon's links, both
    // generations run and each decision is counted and reported twice, so that
    // window must not include the verifier's seconds.
    for &program in programs.iter().filter(here) {
        load(ebpf, btf, program)?;
    }
    let mut links = Vec::new();
    for &program in programs.iter().filter(here) {
        if let Some(link) = attach(ebpf, btf, program, cgroup, keep)? {
            links.push((program.name, NewLink::Aya(link)));
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

/// Loads one program for its attach point, unless it is loaded already.
fn load(ebpf: &mut Ebpf, btf: &Btf, program: &Program) -> Result<(), LoadError> {
    let name = program.name;
    let load = |source| LoadError::Load {
        program: name,
        source,
    };
    match (program.attach, ebpf.program_mut(name)) {
        (Attach::BtfTracepoint(_) | Attach::CompatEntry, Some(AyaProgram::BtfTracePoint(p)))
            if p.fd().is_err() =>
        {
            let point = program.attach.btf_tracepoint().unwrap_or_default();
            p.load(point, btf).map_err(load)?;
        }
        (_, Some(AyaProgram::TracePoint(p))) if p.fd().is_err() => p.load().map_err(load)?,
        (_, Some(AyaProgram::CgroupSockAddr(p))) if p.fd().is_err() => p.load().map_err(load)?,
        (_, Some(AyaProgram::CgroupSock(p))) if p.fd().is_err() => p.load().map_err(load)?,
        // LSM programs were loaded while choosing the backend; a missing program is
        // reported by `attach`.
        _ => {}
    }
    Ok(())
}

/// Loads (unless already loaded) and attaches one program. With `keep`, the link is
/// taken out of the program so it can be pinned and outlive this process.
fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &Program,
    cgroup: &Path,
    keep: bool,
) -> Result<Option<FdLink>, LoadError> {
    let name = program.name;
    let load = |source| LoadError::Load {
        program: name,
        source,
    };
    let attach_err = |source| LoadError::Attach {
        program: name,
        source,
    };
    tracing::debug!(program = name, at = %program.attach, "attaching");
    let (category, tracepoint) = match program.attach {
        Attach::Cgroup(_) => return attach_cgroup(ebpf, name, cgroup, keep),
        Attach::Syscall(tp) | Attach::OptionalSyscall(tp) => ("syscalls", tp),
        Attach::OptionalTracepoint(category, tp) => (category, tp),
        Attach::BtfTracepoint(_) | Attach::CompatEntry | Attach::Lsm(_) | Attach::Unix(_) => {
            ("", "")
        }
    };
    let link = match (program.attach, ebpf.program_mut(name)) {
        (Attach::BtfTracepoint(_) | Attach::CompatEntry, Some(AyaProgram::BtfTracePoint(p))) => {
            if p.fd().is_err() {
                let point = program.attach.btf_tracepoint().unwrap_or_default();
                p.load(point, btf).map_err(load)?;
            }
            let id = p.attach().map_err(attach_err)?;
            keep.then(|| p.take_link(id).map(FdLink::from))
                .transpose()
                .map_err(attach_err)?
        }
        (Attach::Lsm(_), Some(AyaProgram::Lsm(p))) => {
            // Loaded while choosing the backend.
            let id = p.attach().map_err(attach_err)?;
            keep.then(|| p.take_link(id).map(FdLink::from))
                .transpose()
                .map_err(attach_err)?
        }
        (
            Attach::Syscall(_) | Attach::OptionalSyscall(_) | Attach::OptionalTracepoint(..),
            Some(AyaProgram::TracePoint(p)),
        ) => {
            if p.fd().is_err() {
                p.load().map_err(load)?;
            }
            let id = p.attach(category, tracepoint).map_err(attach_err)?;
            // A bpf_link (>= 5.15) can be pinned; an older perf-event attachment not.
            keep.then(|| p.take_link(id).map(FdLink::try_from))
                .transpose()
                .map_err(attach_err)?
                .transpose()
                .map_err(|source| LoadError::Handover {
                    path: PathBuf::from(format!("{category}:{tracepoint}")),
                    source: HandoverError::TracepointLink {
                        program: name,
                        source,
                    },
                })?
        }
        _ => return Err(LoadError::MissingProgram(name)),
    };
    Ok(link)
}

/// Loads (once) and attaches one cgroup `sock_addr` or `sock` program to `cgroup`.
pub(super) fn attach_cgroup(
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
        Some(AyaProgram::CgroupSockAddr(p)) => attach!(p),
        Some(AyaProgram::CgroupSock(p)) => attach!(p),
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
fn cgroup_link<L>(program: &'static str, cgroup: &Path, link: L) -> Result<FdLink, LoadError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    FdLink::try_from(link).map_err(|source| LoadError::Handover {
        path: cgroup.to_owned(),
        source: HandoverError::CgroupLink { program, source },
    })
}
