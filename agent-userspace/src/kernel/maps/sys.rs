//! The few `bpf()` commands aya 0.14 does not wrap, for the prefix-trie pool.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, OwnedFd},
};

use crate::kernel::bpf_syscall::{bpf, owned_fd};

/// `BPF_F_NO_PREALLOC` (uapi `bpf.h`): the kernel requires it of LPM tries.
pub const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_BTF_LOAD: libc::c_long = 18;
/// `BPF_MAP_UPDATE_BATCH` (>= 5.6).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BTF_KIND_STRUCT: u32 = 4;

/// `BPF_MAP_UPDATE_BATCH` of u32 keys and values; on failure, how many went in, and why
/// the rest did not.
pub fn update_batch(
    map: BorrowedFd<'_>,
    keys: &[u32],
    values: &[u32],
) -> Result<(), (usize, io::Error)> {
    /// The `batch` member of `union bpf_attr`.
    #[repr(C)]
    struct Attr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    let mut attr = Attr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len().min(values.len()) as u32,
        map_fd: map.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_BATCH, &mut attr)
        .map(drop)
        .map_err(|e| (attr.count as usize, e))
}

/// Two empty structs the sizes of a trie's key and value, in BTF of their own.
///
/// The kernel puts a map in a map-in-map slot only if it matches the template the
/// object declared. Before 6.2 that includes fields BTF sets (`timer_off`): the
/// template has BTF, so a trie created without any is refused (EINVAL) on 6.1.
pub struct TrieBtf {
    fd: OwnedFd,
    key_size: u32,
    value_size: u32,
}

impl TrieBtf {
    pub fn load(key_size: usize, value_size: usize) -> io::Result<Self> {
        /// The `BPF_BTF_LOAD` member of `union bpf_attr`.
        #[repr(C)]
        struct Attr {
            btf: u64,
            btf_log_buf: u64,
            btf_size: u32,
            btf_log_size: u32,
            btf_log_level: u32,
            /// Explicit, so it is zero: a kernel that does not know the field here
            /// (6.1) refuses non-zero bytes past the ones it knows (EINVAL).
            pad: u32,
        }
        let (key_size, value_size) = (key_size as u32, value_size as u32);
        // Header, then types 1 (key) and 2 (value): anonymous structs with no members
        // (an LPM trie's key type must be a struct), then the string section: "\0".
        let words: [u32; 6] = [
            0,
            BTF_KIND_STRUCT << 24,
            key_size,
            0,
            BTF_KIND_STRUCT << 24,
            value_size,
        ];
        let types: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut blob = Vec::new();
        blob.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
        blob.extend_from_slice(&[1, 0]); // version, flags
        for w in [24, 0, types.len() as u32, types.len() as u32, 1] {
            // hdr_len, type_off, type_len, str_off, str_len
            blob.extend_from_slice(&u32::to_ne_bytes(w));
        }
        blob.extend_from_slice(&types);
        blob.push(0);
        let mut attr = Attr {
            btf: blob.as_ptr() as u64,
            btf_log_buf: 0,
            btf_size: blob.len() as u32,
            btf_log_size: 0,
            btf_log_level: 0,
            pad: 0,
        };
        let fd = owned_fd(bpf(BPF_BTF_LOAD, &mut attr)?);
        Ok(Self {
            fd,
            key_size,
            value_size,
        })
    }

    /// A new LPM trie typed with this BTF.
    pub fn create_trie(&self, max_entries: u32) -> io::Result<OwnedFd> {
        /// The `BPF_MAP_CREATE` member of `union bpf_attr`, up to the BTF type ids.
        #[repr(C)]
        struct Attr {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
            inner_map_fd: u32,
            numa_node: u32,
            map_name: [u8; 16],
            map_ifindex: u32,
            btf_fd: u32,
            btf_key_type_id: u32,
            btf_value_type_id: u32,
        }
        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"net_prefix\0");
        let mut attr = Attr {
            map_type: BPF_MAP_TYPE_LPM_TRIE,
            key_size: self.key_size,
            value_size: self.value_size,
            max_entries,
            map_flags: BPF_F_NO_PREALLOC,
            inner_map_fd: 0,
            numa_node: 0,
            map_name: name,
            map_ifindex: 0,
            btf_fd: self.fd.as_raw_fd() as u32,
            btf_key_type_id: 1,
            btf_value_type_id: 2,
        };
        bpf(BPF_MAP_CREATE, &mut attr).map(owned_fd)
    }
}
