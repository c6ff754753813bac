//! The cgroup `connect_unix` and `sendmsg_unix` hooks (Linux >= 6.7), loaded and
//! attached here rather than by aya: aya 0.14 knows neither attach type.
//!
//! On kernels that have them the portable backend refuses a unix connect or send to a
//! name not granted with EPERM, before the name is looked up, for syscalls and
//! `io_uring` alike, and needs none of the eight unix syscall tracepoints (which ran
//! for every process of the machine). The programs are built with the rest of the
//! object; this module relocates their code against the maps aya created, using
//! `aya-obj` (aya's own ELF reader), then issues `BPF_PROG_LOAD` with the unix
//! expected attach type and `BPF_LINK_CREATE` on a cgroup.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{Btf, Ebpf, maps::Map, programs::links::PinnedLink};
use aya_obj::{
    ParseError, btf::BtfRelocationError, generated::bpf_insn, relocation::EbpfRelocationError,
};

use crate::kernel::{programs, sys};

#[derive(Debug, thiserror::Error)]
pub enum UnixHookError {
    #[error("cannot read the eBPF object for the unix hooks: {0}")]
    Parse(#[source] ParseError),
    #[error("cannot relocate the unix hooks against the kernel's BTF: {0}")]
    Btf(#[source] BtfRelocationError),
    #[error("cannot relocate the unix hooks: {0}")]
    Relocate(#[source] EbpfRelocationError),
    #[error("map {0} of the eBPF object has no file descriptor to relocate against")]
    Map(String),
    #[error("program {0} is missing from the eBPF object")]
    Missing(&'static str),
    #[error("the kernel refused {program}: {source}{log}")]
    Load {
        program: &'static str,
        source: io::Error,
        log: String,
    },
    #[error("cannot attach {program} to {}: {source}", cgroup.display())]
    Attach {
        program: &'static str,
        cgroup: PathBuf,
        source: io::Error,
    },
    #[error("cannot pin the link of {program} at {}: {source}", path.display())]
    Pin {
        program: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot open the pinned link of {program} at {}: {source}", path.display())]
    Pinned {
        program: &'static str,
        path: PathBuf,
        source: aya::programs::links::LinkError,
    },
}

/// The descriptors of every map of a freshly loaded object (before the control plane
/// takes them), so the unix programs can be relocated against the same maps.
pub(crate) fn map_fds(ebpf: &Ebpf) -> Result<Vec<(String, OwnedFd)>, UnixHookError> {
    ebpf.maps()
        .map(|(name, map)| {
            map_fd(map)
                .and_then(|fd| fd.try_clone_to_owned().ok())
                .map(|fd| (name.to_owned(), fd))
                .ok_or_else(|| UnixHookError::Map(name.to_owned()))
        })
        .collect()
}

fn map_fd(map: &Map) -> Option<BorrowedFd<'_>> {
    let (Map::Array(data)
    | Map::ArrayOfMaps(data)
    | Map::HashMap(data)
    | Map::HashOfMaps(data)
    | Map::LpmTrie(data)
    | Map::LruHashMap(data)
    | Map::PerCpuArray(data)
    | Map::PerCpuHashMap(data)
    | Map::RingBuf(data)
    | Map::Unsupported(data)) = map
    else {
        return None;
    };
    Some(data.fd().as_fd())
}

/// The two programs, loaded.
#[derive(Debug)]
pub(crate) struct UnixHooks {
    programs: Vec<(&'static str, u32, OwnedFd)>,
}

impl UnixHooks {
    /// Loads both programs. `Ok(None)` when the kernel has no unix hooks (before 6.7:
    /// no `bpf_sock_addr_kern.uaddrlen` in its BTF, or the load is refused with
    /// EINVAL for the unknown attach type).
    pub(crate) fn load(
        object: &[u8],
        maps: &[(String, OwnedFd)],
        btf: &Btf,
        has_uaddrlen: bool,
    ) -> Result<Option<Self>, UnixHookError> {
        if !has_uaddrlen {
            return Ok(None);
        }
        let code = relocated(object, maps, btf)?;
        let mut programs = Vec::new();
        for ((name, attach), (license, insns)) in programs::unix_hooks().zip(code) {
            match prog_load(name, attach, &license, &insns) {
                Ok(fd) => programs.push((name, attach, fd)),
                Err(UnixHookError::Load { source, .. })
                    if source.raw_os_error() == Some(libc::EINVAL) && programs.is_empty() =>
                {
                    tracing::info!("no cgroup unix hooks in this kernel ({source})");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(Self { programs }))
    }

    /// Attaches both programs to `cgroup`, returning their links by program.
    pub(crate) fn attach(
        &self,
        cgroup: &Path,
    ) -> Result<Vec<(&'static str, OwnedFd)>, UnixHookError> {
        let first = self.programs.first().map_or("", |(name, ..)| *name);
        let dir = std::fs::File::open(cgroup).map_err(|source| UnixHookError::Attach {
            program: first,
            cgroup: cgroup.to_owned(),
            source,
        })?;
        self.programs
            .iter()
            .map(|(name, attach, prog)| {
                sys::link_create(prog.as_fd(), dir.as_fd(), *attach)
                    .map(|link| (*name, link))
                    .map_err(|source| UnixHookError::Attach {
                        program: name,
                        cgroup: cgroup.to_owned(),
                        source,
                    })
            })
            .collect()
    }

    /// Run time and count of each program (`kernel.bpf_stats_enabled`).
    #[must_use]
    pub(crate) fn stats(&self) -> Vec<(&'static str, std::time::Duration, u64)> {
        self.programs
            .iter()
            .filter_map(|(name, _, fd)| {
                let (time, count) = sys::prog_run_stats(fd.as_fd()).ok()?;
                Some((*name, std::time::Duration::from_nanos(time), count))
            })
            .collect()
    }
}

/// The license and relocated code of each unix hook of the program table, in order.
fn relocated(
    object: &[u8],
    maps: &[(String, OwnedFd)],
    btf: &Btf,
) -> Result<Vec<(CString, Vec<bpf_insn>)>, UnixHookError> {
    let mut obj = aya_obj::Object::parse(object).map_err(UnixHookError::Parse)?;
    obj.relocate_btf(btf).map_err(UnixHookError::Btf)?;
    let by_name: HashMap<&str, &OwnedFd> = maps.iter().map(|(n, fd)| (n.as_str(), fd)).collect();
    let objs: Vec<(String, aya_obj::Map)> = obj.maps.drain().collect();
    let mut with_fds = Vec::new();
    for (name, map) in &objs {
        let fd = by_name
            .get(name.as_str())
            .ok_or_else(|| UnixHookError::Map(name.clone()))?;
        with_fds.push((name.as_str(), fd.as_raw_fd(), map));
    }
    let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(with_fds.into_iter(), &text)
        .map_err(UnixHookError::Relocate)?;
    obj.relocate_calls(&text).map_err(UnixHookError::Relocate)?;
    programs::unix_hooks()
        .map(|(name, _)| {
            let prog = obj.programs.get(name).ok_or(UnixHookError::Missing(name))?;
            let function = obj
                .functions
                .get(&prog.function_key())
                .ok_or(UnixHookError::Missing(name))?;
            Ok((prog.license.clone(), function.instructions.clone()))
        })
        .collect()
}

fn prog_load(
    name: &'static str,
    attach: u32,
    license: &CString,
    insns: &[bpf_insn],
) -> Result<OwnedFd, UnixHookError> {
    sys::prog_load_sock_addr(name, attach, license, insns, &mut []).or_else(|_| {
        // Again with the verifier's log, to say why.
        let mut log = vec![0u8; 1 << 24];
        sys::prog_load_sock_addr(name, attach, license, insns, &mut log).map_err(|source| {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            UnixHookError::Load {
                program: name,
                source,
                log: if tail.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; verifier: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    )
                },
            }
        })
    })
}

/// Pins a link made here at `path`; the pin holds it like aya's own.
pub(crate) fn pin_link(
    program: &'static str,
    link: &OwnedFd,
    path: &Path,
) -> Result<PinnedLink, UnixHookError> {
    sys::pin(link.as_fd(), path).map_err(|source| UnixHookError::Pin {
        program,
        path: path.to_owned(),
        source,
    })?;
    PinnedLink::from_pin(path).map_err(|source| UnixHookError::Pinned {
        program,
        path: path.to_owned(),
        source,
    })
}
