//! The device number the kernel's exec check will see for a granted file, on file
//! systems where it is not the `st_dev` that `stat` reports, and the file systems
//! whose files cannot be granted at all (docs/security.md, class 25).
//!
//! - overlayfs: the kernel sees the overlay's own device. `stat` reports it when every
//!   layer is on one file system (or with `xino`); otherwise a file gets its layer's
//!   pseudo device, and inode numbers repeat across layers, so (device, inode) names
//!   no single file: refused.
//! - btrfs: `stat` reports the subvolume's anonymous device, which the kernel reads
//!   from the inode's subvolume root (`btrfs_inode.root->anon_dev`) where its BTF
//!   describes btrfs; where not, refused, since the superblock's device is shared by
//!   every subvolume and inode numbers repeat across them.
//! - FUSE: the server process makes up content, change time and generation alike, so
//!   nothing recorded at grant time proves what will run: refused (and the kernel
//!   denies any exec from FUSE).

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};

use nix::sys::statfs::{self, BTRFS_SUPER_MAGIC, FUSE_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC};

use super::{GrantError, exec::kernel_dev};

/// Whether the loaded programs can read a btrfs file's subvolume device (set by the
/// loader from the kernel's BTF).
static BTRFS_IDENTITY: AtomicBool = AtomicBool::new(false);

/// Records whether the kernel's exec check knows btrfs subvolumes.
pub fn set_btrfs_identity(known: bool) {
    BTRFS_IDENTITY.store(known, Ordering::Relaxed);
}

/// The device, in the kernel's `s_dev` encoding, under which the exec check will find
/// `file` (opened at `path`; `parent` is its directory, opened the same way), or why
/// it cannot be granted.
pub(super) fn kernel_device(
    file: &fs::File,
    meta: &fs::Metadata,
    path: &Path,
    parent: impl FnOnce() -> std::io::Result<fs::File>,
) -> Result<u32, GrantError> {
    let stat_error = |source| GrantError::Stat {
        path: path.to_owned(),
        source,
    };
    let kind = statfs::fstatfs(file)
        .map_err(|e| stat_error(e.into()))?
        .filesystem_type();
    if kind == FUSE_SUPER_MAGIC {
        return Err(GrantError::Fuse(path.to_owned()));
    }
    if kind == BTRFS_SUPER_MAGIC && !BTRFS_IDENTITY.load(Ordering::Relaxed) {
        return Err(GrantError::Btrfs(path.to_owned()));
    }
    if kind == OVERLAYFS_SUPER_MAGIC {
        // A directory of the overlay always reports the overlay's device.
        let dir = parent().and_then(|d| d.metadata()).map_err(stat_error)?;
        if dir.dev() != meta.dev() {
            return Err(GrantError::OverlayLayers(path.to_owned()));
        }
    }
    Ok(kernel_dev(meta.dev()))
}
