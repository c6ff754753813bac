//! The raw `bpf()` system call, for the commands aya 0.14 does not wrap: pinning and
//! opening pins of any object, the prefix-trie pool's BTF, tries and batch updates,
//! and the cgroup unix hooks' load, link and statistics.
//!
//! Every command goes through [`bpf`] with a whole `union bpf_attr` (aya-obj's
//! generated one), zeroed first: a kernel refuses (EINVAL) any non-zero byte past the
//! fields it knows, so no field may be left to chance (a hand-rolled attr with
//! implicit padding once failed on Linux 6.1 that way). The safe wrappers below fill
//! one member each, from borrowed descriptors and slices that outlive the call.

use std::{
    ffi::{CStr, CString},
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

pub(crate) use aya_obj::generated::BPF_F_NO_PREALLOC;
use aya_obj::generated::{
    bpf_attr, bpf_cmd, bpf_insn, bpf_map_type::BPF_MAP_TYPE_LPM_TRIE, bpf_prog_info,
    bpf_prog_type::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
};

/// An all-zero `union bpf_attr`: every command's empty state.
fn zeroed() -> bpf_attr {
    // SAFETY: bpf_attr is plain integers and arrays of them; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// `bpf(cmd, attr, sizeof attr)`; the non-negative result.
///
/// # Safety
///
/// The member of `attr` that `cmd` reads must be filled for it, and every pointer in
/// it must be valid for the reads and writes the kernel does for `cmd` until this
/// returns. Every other byte should be zero (else the kernel refuses the call).
pub(crate) unsafe fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a whole `union bpf_attr` of the size passed; the caller vouches
    // for the pointers in it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// [`bpf`] for a command that returns a new descriptor, owned by the result.
///
/// # Safety
///
/// As for [`bpf`]; moreover `cmd` must be one that returns a new file descriptor on
/// success (`BPF_MAP_CREATE`, `BPF_PROG_LOAD`, `BPF_OBJ_GET`, `BPF_BTF_LOAD`,
/// `BPF_LINK_CREATE`, ...), which nothing else then owns.
pub(crate) unsafe fn bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: the caller's contract for `bpf`.
    let rc = unsafe { bpf(cmd, attr)? };
    let fd = i32::try_from(rc).map_err(io::Error::other)?;
    // SAFETY: the caller vouches that `cmd` returned a new descriptor nobody owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Pins the map, program or link behind `fd` at `path` on bpffs (`BPF_OBJ_PIN`).
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    let mut attr = zeroed();
    // SAFETY: writing plain integers into the BPF_OBJ_PIN member of a zeroed union.
    let a = unsafe { &mut attr.__bindgen_anon_4 };
    a.pathname = c.as_ptr() as u64;
    a.bpf_fd = fd.as_raw_fd() as u32;
    // SAFETY: the pathname is a NUL-terminated string alive until after the call.
    unsafe { bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr) }.map(drop)
}

/// A new descriptor of the object pinned at `path` (`BPF_OBJ_GET`).
pub(crate) fn get_pinned(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    let mut attr = zeroed();
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    // SAFETY: as for `pin`; BPF_OBJ_GET returns a new descriptor.
    unsafe { bpf_fd(bpf_cmd::BPF_OBJ_GET, &mut attr) }
}

/// `BPF_MAP_UPDATE_BATCH` (>= 5.6) of u32 keys and values; on failure, how many went
/// in, and why the rest did not.
pub(crate) fn update_batch(
    map: BorrowedFd<'_>,
    keys: &[u32],
    values: &[u32],
) -> Result<(), (usize, io::Error)> {
    let mut attr = zeroed();
    // SAFETY: writing plain integers into the `batch` member of a zeroed union.
    let a = unsafe { &mut attr.batch };
    a.keys = keys.as_ptr() as u64;
    a.values = values.as_ptr() as u64;
    a.count = keys.len().min(values.len()) as u32;
    a.map_fd = map.as_raw_fd() as u32;
    // SAFETY: `count` keys and values are readable behind the two pointers.
    let rc = unsafe { bpf(bpf_cmd::BPF_MAP_UPDATE_BATCH, &mut attr) };
    // SAFETY: the kernel wrote back how many it processed into the same member.
    let done = unsafe { attr.batch.count } as usize;
    rc.map(drop).map_err(|e| (done, e))
}

/// Loads a raw BTF blob (`BPF_BTF_LOAD`), without a log.
pub(crate) fn btf_load(blob: &[u8]) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    // SAFETY: writing plain integers into the BPF_BTF_LOAD member of a zeroed union.
    let a = unsafe { &mut attr.__bindgen_anon_7 };
    a.btf = blob.as_ptr() as u64;
    a.btf_size = blob.len() as u32;
    // SAFETY: `btf_size` bytes are readable at `btf`; BPF_BTF_LOAD returns a new fd.
    unsafe { bpf_fd(bpf_cmd::BPF_BTF_LOAD, &mut attr) }
}

/// What [`create_lpm_trie`] creates.
pub(crate) struct TrieSpec<'a> {
    pub(crate) name: &'a CStr,
    pub(crate) key_size: u32,
    pub(crate) value_size: u32,
    pub(crate) max_entries: u32,
    /// BTF and its type ids for the key and the value.
    pub(crate) btf: BorrowedFd<'a>,
    pub(crate) btf_key_type_id: u32,
    pub(crate) btf_value_type_id: u32,
}

/// A new LPM trie (`BPF_MAP_CREATE`, `BPF_F_NO_PREALLOC` as the kernel requires).
pub(crate) fn create_lpm_trie(spec: &TrieSpec<'_>) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    // SAFETY: writing plain integers into the BPF_MAP_CREATE member of a zeroed union.
    let a = unsafe { &mut attr.__bindgen_anon_1 };
    a.map_type = BPF_MAP_TYPE_LPM_TRIE as u32;
    a.key_size = spec.key_size;
    a.value_size = spec.value_size;
    a.max_entries = spec.max_entries;
    a.map_flags = BPF_F_NO_PREALLOC;
    // The kernel keeps 15 bytes of the name.
    for (dst, src) in a
        .map_name
        .iter_mut()
        .zip(spec.name.to_bytes().iter().take(15))
    {
        *dst = *src as libc::c_char;
    }
    a.btf_fd = spec.btf.as_raw_fd() as u32;
    a.btf_key_type_id = spec.btf_key_type_id;
    a.btf_value_type_id = spec.btf_value_type_id;
    // SAFETY: no pointers; BPF_MAP_CREATE returns a new descriptor.
    unsafe { bpf_fd(bpf_cmd::BPF_MAP_CREATE, &mut attr) }
}

/// `BPF_PROG_LOAD` of a cgroup `sock_addr` program with `expected_attach_type`
/// `attach`; an empty `log` asks for none.
pub(crate) fn prog_load_sock_addr(
    name: &str,
    attach: u32,
    license: &CStr,
    insns: &[bpf_insn],
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    // SAFETY: writing plain integers into the BPF_PROG_LOAD member of a zeroed union.
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
    // SAFETY: the instructions, the license string and the log buffer are alive and
    // sized as stated; BPF_PROG_LOAD returns a new descriptor.
    unsafe { bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr) }
}

/// `BPF_LINK_CREATE` of `prog` on the cgroup `target` with attach type `attach`.
pub(crate) fn link_create(
    prog: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach: u32,
) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    // SAFETY: writing plain integers into the BPF_LINK_CREATE member of a zeroed union.
    let a = unsafe { &mut attr.link_create };
    a.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    a.__bindgen_anon_2.target_fd = target.as_raw_fd() as u32;
    a.attach_type = attach;
    // SAFETY: no pointers; BPF_LINK_CREATE returns a new descriptor.
    unsafe { bpf_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr) }
}

/// `(run_time_ns, run_cnt)` of a program (`BPF_OBJ_GET_INFO_BY_FD`).
pub(crate) fn prog_run_stats(prog: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // SAFETY: plain integers, zero is empty.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed();
    // SAFETY: writing plain integers into the `info` member of a zeroed union.
    let a = unsafe { &mut attr.info };
    a.bpf_fd = prog.as_raw_fd() as u32;
    a.info_len = size_of_val(&info) as u32;
    a.info = std::ptr::from_mut(&mut info) as u64;
    // SAFETY: `info_len` bytes are writable at `info` until the call returns.
    unsafe { bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok((info.run_time_ns, info.run_cnt))
}
