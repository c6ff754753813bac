//! Grant syntax (docs/grants.md) parsed into domain types, then compiled into the
//! kernel's keys and values.
//!
//! `exec`: an absolute path, resolved to the (device, inode) of the file it names now;
//! `DIR/` grants every executable regular file directly inside DIR.
//! `connect`: `ADDR[/PREFIX]:PORTS[/PROTO]`, IPv6 in brackets, a DNS name or `*.NAME`
//! for ADDR,
//! PORTS one port, `a-b` or `*`, PROTO `tcp` or `udp` (omitted: both).
//!
//! `connect` parses connect grants, `net` compiles them into the kernel's prefix
//! entries, `exec` resolves exec grants to files and `file_state` records what the
//! kernel checks of each.

use std::{io, net::Ipv6Addr, path::PathBuf};

use leash_common::grant::{MAX_PORT_RULES, SCRIPT_PATH_LEN};

mod connect;
mod exec;
pub mod exec_role;
pub mod file_state;
mod file_system;
mod net;
pub mod remedy;
pub mod unix;
pub mod within;

pub use connect::{ConnectSpec, Host};
pub use exec::{ExecFile, dev_text, kernel_dev, resolve_exec, resolve_exec_in};
pub use file_state::FileState;
pub use file_system::set_btrfs_identity;
pub use net::{NetGrant, compile_net, mapped, mapped_prefix};
pub use unix::{SocketFile, UnixView};

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("exec grant {0:?}: the path must be absolute (e.g. /usr/bin/git)")]
    RelativePath(PathBuf),
    #[error("exec grant {path:?}: cannot open the caller's root {}: {source}", root.display())]
    OpenRoot {
        path: PathBuf,
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("exec grant {path:?}: cannot list the directory: {source}")]
    ListDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("exec grant {path:?}: {source} (grant an existing file)")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("exec grant {path:?}: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("exec grant {0:?}: not a regular file (a directory grant ends with /)")]
    NotRegular(PathBuf),
    #[error("exec grant {0:?}: not executable (no x bit set)")]
    NotExecutable(PathBuf),
    #[error(
        "exec grant {0:?}: the file is on FUSE, whose server decides its content and attributes, so leash cannot hold it to what was granted; copy it to a local file system and grant the copy"
    )]
    Fuse(PathBuf),
    #[error(
        "exec grant {0:?}: the file is on btrfs and this kernel's BTF does not describe btrfs (built as a module not loaded when leash started?), so the kernel cannot tell its subvolumes apart; load the btrfs module before starting leash, or grant a copy on another file system"
    )]
    Btrfs(PathBuf),
    #[error(
        "exec grant {0:?}: the file is on an overlay whose layers are on different file systems without xino, where inode numbers repeat across layers (or the file is a mount point of its own); mount the overlay with xino=on, or grant a copy outside it"
    )]
    OverlayLayers(PathBuf),
    #[error(
        "exec grant {0:?}: a tree grant names a directory by a clean absolute path (no '.', '..' or '//'), other than / itself, e.g. /srv/venv/**"
    )]
    BadTree(String),
    #[error("exec grant {path:?}: not a directory (a tree grant is DIR/**)")]
    NotDirectory { path: PathBuf },
    #[error("exec grant {0:?}: the directory holds no executable file")]
    EmptyDir(PathBuf),
    #[error(
        "exec grant {0:?}: the path is longer than {SCRIPT_PATH_LEN} bytes, too long for a shebang script grant"
    )]
    ScriptPathTooLong(PathBuf),
    #[error(
        "connect grant {spec:?}: {reason}; expected ADDR[/PREFIX]:PORTS[/PROTO], e.g. 10.0.0.0/8:443/tcp or \"[::1]:5432\""
    )]
    BadConnect { spec: String, reason: String },
    #[error(
        "socket grant {spec:?}: {reason}; expected unix:/abs/path, unix:@abstract or socket:raw|packet|netlink|vsock|io_uring"
    )]
    BadSocket { spec: String, reason: String },
    #[error(
        "file grant {spec:?}: {reason}; expected read:PATH or write:PATH with an absolute PATH, e.g. read:/data or write:/srv/out"
    )]
    BadFile { spec: String, reason: String },
    #[error(
        "connect grants: prefix {addr}/{prefix} of one task needs {count} port rules, more than the {MAX_PORT_RULES} the kernel holds per prefix; merge port ranges"
    )]
    TooManyRules {
        /// The mapped address (IPv4 as `::ffff:a.b.c.d`) and its prefix length (0-128).
        addr: Ipv6Addr,
        prefix: u8,
        count: usize,
    },
}
