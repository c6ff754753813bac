//! The BTF the prefix tries are created with.

use std::{io, os::fd::AsFd as _, os::fd::OwnedFd};

use crate::kernel::sys;

const BTF_KIND_STRUCT: u32 = aya_obj::generated::BTF_KIND_STRUCT;

/// Two empty structs the sizes of a trie's key and value, in BTF of their own.
///
/// The kernel puts a map in a map-in-map slot only if it matches the template the
/// object declared. Before 6.2 that includes fields BTF sets (`timer_off`): the
/// template has BTF, so a trie created without any is refused (EINVAL) on 6.1.
pub(crate) struct TrieBtf {
    fd: OwnedFd,
    key_size: u32,
    value_size: u32,
}

impl TrieBtf {
    pub(crate) fn load(key_size: usize, value_size: usize) -> io::Result<Self> {
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
        Ok(Self {
            fd: sys::btf_load(&blob)?,
            key_size,
            value_size,
        })
    }

    /// A new LPM trie typed with this BTF.
    pub(crate) fn create_trie(&self, max_entries: u32) -> io::Result<OwnedFd> {
        sys::create_lpm_trie(&sys::TrieSpec {
            name: c"net_prefix",
            key_size: self.key_size,
            value_size: self.value_size,
            max_entries,
            btf: self.fd.as_fd(),
            btf_key_type_id: 1,
            btf_value_type_id: 2,
        })
    }
}
