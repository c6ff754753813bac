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
    path::Path,
};

use agent_common::maps::programs as p;
use aya::{Btf, Ebpf, maps::Map, programs::links::PinnedLink};
use aya_obj::generated::{
    bpf_attach_type::{BPF_CGROUP_UNIX_CONNECT, BPF_CGROUP_UNIX_SENDMSG},
    bpf_attr, bpf_cmd, bpf_insn,
    bpf_prog_type::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
};

/// The two programs and their attach types.
pub const PROGRAMS: [(&str, u32); 2] = [
    (p::FAMILY_CONNECT_UNIX, BPF_CGROUP_UNIX_CONNECT as u32),
    (p::FAMILY_SENDMSG_UNIX, BPF_CGROUP_UNIX_SENDMSG as u32),
];

#[derive(Debug, thiserror::Error)]
pub enum UnixHookError {
    #[error("cannot read the eBPF object for the unix hooks: {0}")]
    Object(String),
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
    #[error("cannot attach {program} to {cgroup}: {source}")]
    Attach {
        program: &'static str,
        cgroup: String,
        source: io::Error,
    },
    #[error("cannot pin the link of {program} at {path}: {source}")]
    Pin {
        program: &'static str,
        path: String,
        source: io::Error,
    },
}

/// The descriptors of every map of a freshly loaded object (before the control plane
/// takes them), so the unix programs can be relocated against the same maps.
pub fn map_fds(ebpf: &Ebpf) -> Result<Vec<(String, OwnedFd)>, UnixHookError> {
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
pub struct UnixHooks {
    programs: Vec<(&'static str, u32, OwnedFd)>,
}

impl UnixHooks {
    /// Loads both programs. `Ok(None)` when the kernel has no unix hooks (before 6.7:
    /// no `bpf_sock_addr_kern.uaddrlen` in its BTF, or the load is refused with
    /// EINVAL for the unknown attach type).
    pub fn load(
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
        for ((name, attach), (license, insns)) in PROGRAMS.into_iter().zip(code) {
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
    pub fn attach(&self, cgroup: &Path) -> Result<Vec<(&'static str, OwnedFd)>, UnixHookError> {
        let dir = std::fs::File::open(cgroup).map_err(|source| UnixHookError::Attach {
            program: PROGRAMS[0].0,
            cgroup: cgroup.display().to_string(),
            source,
        })?;
        self.programs
            .iter()
            .map(|(name, attach, prog)| {
                link_create(prog.as_fd(), dir.as_fd(), *attach)
                    .map(|link| (*name, link))
                    .map_err(|source| UnixHookError::Attach {
                        program: name,
                        cgroup: cgroup.display().to_string(),
                        source,
                    })
            })
            .collect()
    }

    /// Run time and count of each program (`kernel.bpf_stats_enabled`).
    #[must_use]
    pub fn stats(&self) -> Vec<(&'static str, std::time::Duration, u64)> {
        self.programs
            .iter()
            .filter_map(|(name, _, fd)| {
                let (time, count) = run_stats(fd.as_fd()).ok()?;
                Some((*name, std::time::Duration::from_nanos(time), count))
            })
            .collect()
    }
}

/// The license and relocated code of each of [`PROGRAMS`], in order.
fn relocated(
    object: &[u8],
    maps: &[(String, OwnedFd)],
    btf: &Btf,
) -> Result<Vec<(CString, Vec<bpf_insn>)>, UnixHookError> {
    let err = |e: &dyn std::fmt::Display| UnixHookError::Object(e.to_string());
    let mut obj = aya_obj::Object::parse(object).map_err(|e| err(&e))?;
    obj.relocate_btf(btf).map_err(|e| err(&e))?;
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
        .map_err(|e| err(&e))?;
    obj.relocate_calls(&text).map_err(|e| err(&e))?;
    PROGRAMS
        .iter()
        .map(|(name, _)| {
            let prog = obj
                .programs
                .get(*name)
                .ok_or(UnixHookError::Missing(name))?;
            let function = obj
                .functions
                .get(&prog.function_key())
                .ok_or(UnixHookError::Missing(name))?;
            Ok((prog.license.clone(), function.instructions.clone()))
        })
        .collect()
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<libc::c_long> {
    crate::kernel::bpf_syscall::bpf(cmd as libc::c_long, attr)
}

/// `bpf()` returned a new descriptor.
fn owned(fd: libc::c_long) -> OwnedFd {
    crate::kernel::bpf_syscall::owned_fd(fd)
}

fn zeroed() -> bpf_attr {
    // SAFETY: bpf_attr is plain data; all-zero is its documented empty state.
    unsafe { std::mem::zeroed() }
}

fn prog_load(
    name: &'static str,
    attach: u32,
    license: &CString,
    insns: &[bpf_insn],
) -> Result<OwnedFd, UnixHookError> {
    prog_load_with_log(name, attach, license, insns, &mut []).or_else(|_| {
        // Again with the verifier's log, to say why.
        let mut log = vec![0u8; 1 << 24];
        prog_load_with_log(name, attach, license, insns, &mut log).map_err(|source| {
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

/// `BPF_PROG_LOAD`; an empty `log` asks for none.
fn prog_load_with_log(
    name: &'static str,
    attach: u32,
    license: &CString,
    insns: &[bpf_insn],
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    // SAFETY: the BPF_PROG_LOAD member of the union.
    let a = unsafe { &mut attr.__bindgen_anon_3 };
    a.prog_type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR as u32;
    a.expected_attach_type = attach;
    a.insn_cnt = insns.len() as u32;
    a.insns = insns.as_ptr() as u64;
    a.license = license.as_ptr() as u64;
    if !log.is_empty() {
        a.log_level = 1;
        a.log_size = log.len() as u32;
        a.log_buf = log.as_mut_ptr() as u64;
    }
    // The kernel keeps 15 bytes of the name.
    for (dst, src) in a.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src as libc::c_char;
    }
    bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).map(owned)
}

fn link_create(prog: BorrowedFd<'_>, cgroup: BorrowedFd<'_>, attach: u32) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    // SAFETY: the BPF_LINK_CREATE member of the union.
    let a = unsafe { &mut attr.link_create };
    a.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    a.__bindgen_anon_2.target_fd = cgroup.as_raw_fd() as u32;
    a.attach_type = attach;
    bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map(owned)
}

/// Pins a link made here at `path`; the pin holds it like aya's own.
pub fn pin_link(
    program: &'static str,
    link: &OwnedFd,
    path: &Path,
) -> Result<PinnedLink, UnixHookError> {
    let pin = |source| UnixHookError::Pin {
        program,
        path: path.display().to_string(),
        source,
    };
    crate::kernel::bpf_syscall::pin(link.as_fd(), path).map_err(pin)?;
    PinnedLink::from_pin(path).map_err(|e| pin(io::Error::other(e.to_string())))
}

/// `(run_time_ns, run_cnt)` of a program.
fn run_stats(prog: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // SAFETY: plain data, zero is empty.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed();
    // SAFETY: the BPF_OBJ_GET_INFO_BY_FD member of the union.
    let a = unsafe { &mut attr.info };
    a.bpf_fd = prog.as_raw_fd() as u32;
    a.info_len = size_of_val(&info) as u32;
    a.info = std::ptr::from_mut(&mut info) as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok((info.run_time_ns, info.run_cnt))
}
