//! Grant keys and values as the kernel matches them.

/// Key of `EXEC_GRANTS`: a file, by identity rather than path, within one task.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExecKey {
    pub task: u64,
    pub ino: u64,
    /// Device in the kernel's `s_dev` encoding (`major << 20 | minor`), not `st_dev`.
    pub dev: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<ExecKey>() == 24);

/// Value of `EXEC_GRANTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecGrant {
    /// `CLOCK_BOOTTIME` ns after which this grant no longer applies; 0 = the task's.
    pub expires_ns: u64,
}

const _: () = assert!(size_of::<ExecGrant>() == 8);

/// [`ExecFileGrant::checks`]: compare the inode's change time.
pub const CHECK_CTIME: u32 = 1;
/// [`ExecFileGrant::checks`]: compare the inode's generation (`i_generation`), where the
/// file system reported one at grant time.
pub const CHECK_GENERATION: u32 = 2;
/// [`ExecFileGrant::checks`]: the file is a shebang script. The portable backend's exec
/// hook sees only the interpreter, so it checks the script's state when a process of
/// the task opens it for read (the interpreter reading it) instead.
pub const CHECK_SCRIPT: u32 = 4;
/// [`ExecFileGrant::checks`]: the entry is a directory granted with `DIR/**`: any file
/// below it on the same file system may run, whatever its content (the exec hook walks
/// up `d_parent` from the file). No other check applies to a tree.
pub const CHECK_TREE: u32 = 8;
/// How many directories above a file the exec hook looks for a tree grant.
pub const TREE_DEPTH: u32 = 32;

/// Value of `EXEC_GRANTS`: the expiry, and the file as it was when it was granted.
///
/// A write to the file, a chmod, a new link or a new file that got the same inode
/// number all change the inode's change time, which no call can set back; so an exec
/// whose file no longer has the granted change time runs other content than was
/// granted, and is denied (`changed_since_grant`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecFileGrant {
    /// `CLOCK_BOOTTIME` ns after which this grant no longer applies; 0 = the task's.
    pub expires_ns: u64,
    /// `inode.i_ctime` seconds at grant time.
    pub ctime_sec: i64,
    /// `inode.i_ctime` nanoseconds at grant time.
    pub ctime_nsec: u32,
    /// `inode.i_generation` at grant time (with [`CHECK_GENERATION`]).
    pub generation: u32,
    /// [`CHECK_CTIME`] | [`CHECK_GENERATION`] | [`CHECK_SCRIPT`], or [`CHECK_TREE`]
    /// alone; no state bit for a
    /// grant recorded by a daemon that did not know the file's state (state from
    /// before this field existed).
    pub checks: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<ExecFileGrant>() == 32);

/// Data part of the `NET_GRANTS` LPM key (the trie adds the prefix length in front).
///
/// The task id is always matched in full, so the prefix length is
/// `64 + address prefix`. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`,
/// prefix `96 + p`), so an IPv4 grant also matches a mapped destination on an
/// `AF_INET6` socket with no second lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetKey {
    pub task: u64,
    pub addr: [u8; 16],
}

const _: () = assert!(size_of::<NetKey>() == 24);

/// Prefix length of the task id part of a [`NetKey`].
pub const NET_KEY_TASK_BITS: u32 = 64;
/// Prefix length of a full address in a [`NetKey`] (task id and 128 address bits):
/// such entries live in the host hash (`NET_HOSTS`), shorter ones in the task's trie.
pub const FULL_ADDRESS_PREFIX: u32 = NET_KEY_TASK_BITS + 128;

/// Protocol bits of a [`PortRule`].
pub const PROTO_TCP: u8 = 1;
pub const PROTO_UDP: u8 = 2;

/// One port range for one set of protocols.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortRule {
    /// `CLOCK_BOOTTIME` ns after which this rule no longer applies; 0 = the task's.
    pub expires_ns: u64,
    /// Inclusive range, host byte order.
    pub port_lo: u16,
    pub port_hi: u16,
    /// [`PROTO_TCP`] | [`PROTO_UDP`].
    pub protos: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(size_of::<PortRule>() == 16);

impl PortRule {
    #[must_use]
    pub const fn matches(&self, port: u16, proto: u8, now_ns: u64) -> bool {
        self.protos & proto != 0
            && port >= self.port_lo
            && port <= self.port_hi
            && (self.expires_ns == 0 || now_ns < self.expires_ns)
    }
}

/// Most port rules one prefix of one task can hold.
pub const MAX_PORT_RULES: usize = 16;

/// Value of `NET_GRANTS`.
///
/// An LPM lookup returns only the longest matching prefix, so userspace stores in
/// each prefix the rules of every granted prefix of the task that contains it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetRules {
    pub len: u32,
    pub _pad: u32,
    pub rules: [PortRule; MAX_PORT_RULES],
}

const _: () = assert!(size_of::<NetRules>() == 8 + 16 * MAX_PORT_RULES);

impl NetRules {
    pub const EMPTY: Self = Self {
        len: 0,
        _pad: 0,
        rules: [PortRule {
            expires_ns: 0,
            port_lo: 0,
            port_hi: 0,
            protos: 0,
            _pad: [0; 3],
        }; MAX_PORT_RULES],
    };
}

/// Longest script path the portable backend can match.
pub const SCRIPT_PATH_LEN: usize = 128;

/// Key of `SCRIPT_GRANTS`: a granted shebang script by the absolute path it was granted
/// at. Only the portable backend uses it: its exec hook runs after the kernel has
/// swapped the script for its interpreter, so the script's inode is no longer at hand,
/// only the path passed to exec. The lsm backend checks the script's inode instead.
/// A path ending in `/` is a tree grant's directory (`DIR/**`): a script below it, by
/// a clean absolute path, matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScriptKey {
    pub task: u64,
    /// NUL-padded absolute path.
    pub path: [u8; SCRIPT_PATH_LEN],
}

const _: () = assert!(size_of::<ScriptKey>() == 8 + SCRIPT_PATH_LEN);

/// Bytes of `sockaddr_un.sun_path`: a path name holds one fewer, and its NUL.
pub const SUN_PATH_LEN: usize = 108;
/// A unix socket name in a map key: [`SUN_PATH_LEN`], rounded for alignment.
pub const UNIX_PATH_LEN: usize = SUN_PATH_LEN.next_multiple_of(8);

/// Key of `UNIX_GRANTS`: a unix socket a task may connect or send to, by the path
/// passed to the call (NUL-padded), or for an abstract socket a NUL then its name.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnixKey {
    pub task: u64,
    pub path: [u8; UNIX_PATH_LEN],
}

const _: () = assert!(size_of::<UnixKey>() == 8 + UNIX_PATH_LEN);

/// Where a unix path name was granted: the mount namespace and the root directory of
/// the process the grant was resolved for. A path names a socket only through one
/// view of the file systems; in another mount namespace or under another root the
/// same bytes can name another socket (a bind mount, `chroot` plus a hard link).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnixScope {
    /// Inode of the root directory (`fs->root`).
    pub root_ino: u64,
    /// Device of the root directory, in the kernel's `s_dev` encoding.
    pub root_dev: u32,
    /// The mount namespace's inode number (`ns.inum`, as `/proc/<pid>/ns/mnt` shows it).
    pub mnt_ns: u32,
}

const _: () = assert!(size_of::<UnixScope>() == 16);

/// Value of `UNIX_GRANTS`. A path name holds only for a caller whose mount namespace
/// and root are `scope`; an abstract name (per network namespace, no file) has an
/// all-zero scope, which is not checked.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixGrant {
    /// `CLOCK_BOOTTIME` ns after which this grant no longer applies; 0 = the task's.
    pub expires_ns: u64,
    pub scope: UnixScope,
}

const _: () = assert!(size_of::<UnixGrant>() == 24);
