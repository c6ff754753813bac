//! Grant syntax (README, "Grant syntax") parsed into domain types, then compiled into the
//! kernel's keys and values.
//!
//! `exec`: an absolute path, resolved to the (device, inode) of the file it names now;
//! `DIR/` grants every executable regular file directly inside DIR.
//! `connect`: `ADDR[/PREFIX]:PORTS[/PROTO]`, IPv6 in brackets, a DNS name for ADDR,
//! PORTS one port, `a-b` or `*`, PROTO `tcp` or `udp` (omitted: both).

use std::{
    collections::BTreeMap,
    fmt, fs,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs as _},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    str::FromStr,
};

use crate::kernel::file_state::FileState;
use agent_common::{
    ExecKey, NetKey, NetRules, PortRule, ScriptKey,
    grant::{MAX_PORT_RULES, NET_KEY_TASK_BITS, PROTO_TCP, PROTO_UDP, SCRIPT_PATH_LEN},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("exec grant {0:?}: the path must be absolute (e.g. /usr/bin/git)")]
    RelativePath(String),
    #[error("exec grant {path:?}: {reason}")]
    BadFile { path: String, reason: String },
    #[error("exec grant {0:?}: the directory holds no executable file")]
    EmptyDir(String),
    #[error(
        "exec grant {0:?}: the path is longer than {SCRIPT_PATH_LEN} bytes, too long for a shebang script grant"
    )]
    ScriptPathTooLong(String),
    #[error(
        "connect grant {spec:?}: {reason}; expected ADDR[/PREFIX]:PORTS[/PROTO], e.g. 10.0.0.0/8:443/tcp or \"[::1]:5432\""
    )]
    BadConnect { spec: String, reason: String },
    #[error("connect grant {spec:?}: cannot resolve {host:?}: {reason}")]
    Resolve {
        spec: String,
        host: String,
        reason: String,
    },
    #[error(
        "socket grant {spec:?}: {reason}; expected unix:/abs/path, unix:@abstract or socket:raw|packet|netlink|vsock|io_uring"
    )]
    BadSocket { spec: String, reason: String },
    #[error(
        "connect grants: prefix {prefix} of one task needs {count} port rules, more than the {MAX_PORT_RULES} the kernel holds per prefix; merge port ranges"
    )]
    TooManyRules { prefix: String, count: usize },
}

fn bad_connect(spec: &str, reason: impl Into<String>) -> GrantError {
    GrantError::BadConnect {
        spec: spec.to_owned(),
        reason: reason.into(),
    }
}

/// One executable file as the kernel identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecFile {
    /// The path it was granted by (after expanding `DIR/`).
    pub path: PathBuf,
    /// Device in the kernel's `s_dev` encoding.
    pub dev: u32,
    pub ino: u64,
    /// Starts with `#!`: the portable backend also needs its path (see [`ScriptKey`]).
    pub script: bool,
    /// Its change time and generation when resolved: the kernel denies an exec of
    /// anything else at this identity.
    pub state: FileState,
}

impl ExecFile {
    #[must_use]
    pub const fn key(&self, task: u64) -> ExecKey {
        ExecKey {
            task,
            ino: self.ino,
            dev: self.dev,
            _pad: 0,
        }
    }

    /// Keys of the script map: the granted path and, if different, its canonical form.
    pub fn script_keys(&self, task: u64) -> Result<Vec<ScriptKey>, GrantError> {
        if !self.script {
            return Ok(Vec::new());
        }
        let mut paths = vec![self.path.clone()];
        if let Ok(canon) = fs::canonicalize(&self.path)
            && canon != self.path
        {
            paths.push(canon);
        }
        paths
            .iter()
            .map(|p| {
                let bytes = p.as_os_str().as_encoded_bytes();
                // One byte stays NUL, as the kernel's bounded string read leaves it.
                if bytes.len() >= SCRIPT_PATH_LEN {
                    return Err(GrantError::ScriptPathTooLong(p.display().to_string()));
                }
                let mut path = [0u8; SCRIPT_PATH_LEN];
                path[..bytes.len()].copy_from_slice(bytes);
                Ok(ScriptKey { task, path })
            })
            .collect()
    }
}

/// Converts a userspace `st_dev` into the kernel's `s_dev` (`major << 20 | minor`).
#[must_use]
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | (minor & 0xf_ffff)
}

/// Resolves an exec grant to the files it names, as of now, in this process's view of
/// the file system.
pub fn resolve_exec(spec: &str) -> Result<Vec<ExecFile>, GrantError> {
    resolve_exec_in(Path::new("/"), spec)
}

/// Resolves an exec grant inside another root, e.g. `/proc/<pid>/root` of the caller,
/// so that a path means what it means to the process the grant is for (an agent in
/// its own container). Every lookup stays inside that root, symlinks included
/// (`openat2` with `RESOLVE_IN_ROOT`).
pub fn resolve_exec_in(root: &Path, spec: &str) -> Result<Vec<ExecFile>, GrantError> {
    let path = Path::new(spec);
    if !path.is_absolute() {
        return Err(GrantError::RelativePath(spec.to_owned()));
    }
    let bad = |reason: String| GrantError::BadFile {
        path: spec.to_owned(),
        reason,
    };
    let root_dir = fs::File::open(root).map_err(|e| {
        bad(format!(
            "cannot open the caller's root {}: {e}",
            root.display()
        ))
    })?;
    if spec.ends_with('/') {
        let dir = open_in_root(&root_dir, path, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| bad(format!("cannot list the directory: {e}")))?;
        let entries = fs::read_dir(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&dir)
        ))
        .map_err(|e| bad(format!("cannot list the directory: {e}")))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| bad(format!("cannot list the directory: {e}")))?;
            // Follows symlinks (inside the root): a link in the directory grants the
            // file it names.
            if let Ok(file) = exec_file(&root_dir, &path.join(entry.file_name())) {
                files.push(file);
            }
        }
        if files.is_empty() {
            return Err(GrantError::EmptyDir(spec.to_owned()));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        return Ok(files);
    }
    exec_file(&root_dir, path).map(|f| vec![f]).map_err(bad)
}

/// `openat2(root, path, flags, RESOLVE_IN_ROOT)`.
fn open_in_root(root: &fs::File, path: &Path, flags: libc::c_int) -> std::io::Result<fs::File> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = std::ffi::CString::new(rel.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT,
    };
    // SAFETY: valid dirfd, NUL-terminated path and a correctly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &raw const how,
            size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { fs::File::from_raw_fd(fd as i32) })
}

fn exec_file(root: &fs::File, path: &Path) -> Result<ExecFile, String> {
    let mut file = open_in_root(root, path, libc::O_RDONLY)
        .or_else(|_| open_in_root(root, path, libc::O_PATH))
        .map_err(|e| format!("{e} (grant an existing file)"))?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file (a directory grant ends with /)".into());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("not executable (no x bit set)".into());
    }
    let mut magic = [0u8; 2];
    let script = file.read_exact(&mut magic).is_ok() && &magic == b"#!";
    Ok(ExecFile {
        path: path.to_owned(),
        dev: kernel_dev(meta.dev()),
        ino: meta.ino(),
        script,
        state: FileState::of(&file, &meta),
    })
}

/// Destination hosts of a connect grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// An address and prefix length in its own family (IPv4 0–32, IPv6 0–128).
    Net(IpAddr, u8),
    /// Resolved when the grant is compiled.
    Name(String),
}

/// A parsed connect grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectSpec {
    pub host: Host,
    pub port_lo: u16,
    pub port_hi: u16,
    /// [`PROTO_TCP`] | [`PROTO_UDP`].
    pub protos: u8,
}

impl fmt::Display for ConnectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Net(IpAddr::V4(a), p) => write!(f, "{a}/{p}")?,
            Host::Net(IpAddr::V6(a), p) => write!(f, "[{a}]/{p}")?,
            Host::Name(n) => f.write_str(n)?,
        }
        match (self.port_lo, self.port_hi) {
            (0, u16::MAX) => f.write_str(":*")?,
            (lo, hi) if lo == hi => write!(f, ":{lo}")?,
            (lo, hi) => write!(f, ":{lo}-{hi}")?,
        }
        match self.protos {
            PROTO_TCP => f.write_str("/tcp"),
            PROTO_UDP => f.write_str("/udp"),
            _ => Ok(()),
        }
    }
}

impl FromStr for ConnectSpec {
    type Err = GrantError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let s = spec.trim();
        if s.is_empty() {
            return Err(bad_connect(spec, "empty"));
        }
        // Protocol suffix: the part after the last '/' when it is not a number (a prefix).
        let (rest, protos) = match s.rsplit_once('/') {
            Some((rest, proto)) if proto.chars().all(|c| c.is_ascii_alphabetic()) => {
                let protos = match proto {
                    "tcp" => PROTO_TCP,
                    "udp" => PROTO_UDP,
                    other => {
                        return Err(bad_connect(
                            spec,
                            format!(
                                "unknown protocol {other:?} (use tcp or udp, or omit it for both)"
                            ),
                        ));
                    }
                };
                (rest, protos)
            }
            _ => (s, PROTO_TCP | PROTO_UDP),
        };
        let (host_part, ports) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad_connect(spec, "missing :PORTS"))?;
        let (port_lo, port_hi) = parse_ports(spec, ports)?;
        let host = parse_host(spec, host_part)?;
        Ok(Self {
            host,
            port_lo,
            port_hi,
            protos,
        })
    }
}

fn parse_ports(spec: &str, ports: &str) -> Result<(u16, u16), GrantError> {
    let port = |p: &str| -> Result<u16, GrantError> {
        match p.parse::<u16>() {
            Ok(0) => Err(bad_connect(
                spec,
                "port 0 cannot be connected to (use * for any port)",
            )),
            Ok(n) => Ok(n),
            Err(_) => Err(bad_connect(
                spec,
                format!("bad port {p:?} (1-65535, a-b or *)"),
            )),
        }
    };
    if ports == "*" {
        return Ok((0, u16::MAX));
    }
    if let Some((a, b)) = ports.split_once('-') {
        let (lo, hi) = (port(a)?, port(b)?);
        if lo > hi {
            return Err(bad_connect(
                spec,
                format!("port range {ports} runs backwards"),
            ));
        }
        return Ok((lo, hi));
    }
    let p = port(ports)?;
    Ok((p, p))
}

fn parse_host(spec: &str, host: &str) -> Result<Host, GrantError> {
    let (addr, prefix) = match host.split_once('/') {
        Some((a, p)) => {
            let p = p
                .parse::<u8>()
                .map_err(|_| bad_connect(spec, format!("bad prefix length {p:?}")))?;
            (a, Some(p))
        }
        None => (host, None),
    };
    if let Some(inner) = addr.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| bad_connect(spec, "unclosed [ in IPv6 address"))?;
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| bad_connect(spec, format!("bad IPv6 address {inner:?}")))?;
        return net(spec, IpAddr::V6(ip), prefix.unwrap_or(128), 128);
    }
    if let Ok(ip) = addr.parse::<Ipv4Addr>() {
        return net(spec, IpAddr::V4(ip), prefix.unwrap_or(32), 32);
    }
    if addr.parse::<Ipv6Addr>().is_ok() {
        return Err(bad_connect(
            spec,
            "write IPv6 addresses in brackets, e.g. [::1]:5432",
        ));
    }
    if prefix.is_some() {
        return Err(bad_connect(spec, "a DNS name takes no prefix length"));
    }
    let valid_name = !addr.is_empty()
        && addr.len() <= 253
        && addr.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        });
    if !valid_name {
        return Err(bad_connect(
            spec,
            format!("{addr:?} is neither an IP address nor a DNS name"),
        ));
    }
    Ok(Host::Name(addr.to_ascii_lowercase()))
}

fn net(spec: &str, ip: IpAddr, prefix: u8, max: u8) -> Result<Host, GrantError> {
    if prefix > max {
        return Err(bad_connect(
            spec,
            format!("prefix /{prefix} is longer than /{max}"),
        ));
    }
    let masked = mask(mapped(ip), mapped_prefix(ip, prefix));
    if masked != mapped(ip) {
        return Err(bad_connect(
            spec,
            format!(
                "{ip}/{prefix} has host bits set; did you mean {}/{prefix}?",
                unmapped(masked, ip)
            ),
        ));
    }
    Ok(Host::Net(ip, prefix))
}

/// The 16 bytes the kernel matches: IPv4 as `::ffff:a.b.c.d`.
#[must_use]
pub fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Prefix length within the 128-bit mapped form.
#[must_use]
pub const fn mapped_prefix(ip: IpAddr, prefix: u8) -> u8 {
    match ip {
        IpAddr::V4(_) => 96 + prefix,
        IpAddr::V6(_) => prefix,
    }
}

fn unmapped(bytes: [u8; 16], like: IpAddr) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match like {
        IpAddr::V4(_) => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
        IpAddr::V6(_) => IpAddr::V6(v6),
    }
}

fn mask(addr: [u8; 16], bits: u8) -> [u8; 16] {
    let value = u128::from_be_bytes(addr);
    let m = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits))
    };
    (value & m).to_be_bytes()
}

/// A connect grant ready for the kernel: one network, one port rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetGrant {
    /// Mapped address and prefix (0–128).
    pub addr: [u8; 16],
    pub prefix: u8,
    pub rule: PortRule,
}

impl ConnectSpec {
    /// Resolves DNS names and returns one [`NetGrant`] per network, expiring at
    /// `expires_ns` (0 = with the task).
    pub fn to_net_grants(&self, spec: &str, expires_ns: u64) -> Result<Vec<NetGrant>, GrantError> {
        let rule = PortRule {
            expires_ns,
            port_lo: self.port_lo,
            port_hi: self.port_hi,
            protos: self.protos,
            _pad: [0; 3],
        };
        let nets: Vec<(IpAddr, u8)> = match &self.host {
            Host::Net(ip, p) => vec![(*ip, *p)],
            Host::Name(name) => {
                let addrs = (name.as_str(), self.port_lo.max(1))
                    .to_socket_addrs()
                    .map_err(|e| GrantError::Resolve {
                        spec: spec.to_owned(),
                        host: name.clone(),
                        reason: e.to_string(),
                    })?;
                let mut nets: Vec<_> = addrs
                    .map(|a| (a.ip(), if a.is_ipv4() { 32 } else { 128 }))
                    .collect();
                nets.sort_unstable();
                nets.dedup();
                if nets.is_empty() {
                    return Err(GrantError::Resolve {
                        spec: spec.to_owned(),
                        host: name.clone(),
                        reason: "no addresses".into(),
                    });
                }
                nets
            }
        };
        Ok(nets
            .into_iter()
            .map(|(ip, p)| NetGrant {
                addr: mapped(ip),
                prefix: mapped_prefix(ip, p),
                rule,
            })
            .collect())
    }
}

/// Compiles all network grants of one task into LPM entries.
///
/// The trie returns only the longest matching prefix, so each stored prefix carries
/// the rules of every granted prefix that contains it (itself included).
pub fn compile_net(
    task: u64,
    grants: &[NetGrant],
) -> Result<Vec<(u32, NetKey, NetRules)>, GrantError> {
    let mut prefixes: BTreeMap<([u8; 16], u8), Vec<PortRule>> = BTreeMap::new();
    for g in grants {
        prefixes.entry((g.addr, g.prefix)).or_default();
    }
    for (&(addr, prefix), rules) in &mut prefixes {
        for g in grants {
            if g.prefix <= prefix && mask(addr, g.prefix) == g.addr && !rules.contains(&g.rule) {
                rules.push(g.rule);
            }
        }
    }
    prefixes
        .into_iter()
        .map(|((addr, prefix), rules)| {
            if rules.len() > MAX_PORT_RULES {
                return Err(GrantError::TooManyRules {
                    prefix: format!("{}/{prefix}", Ipv6Addr::from(addr)),
                    count: rules.len(),
                });
            }
            let mut value = NetRules::EMPTY;
            value.len = rules.len() as u32;
            value.rules[..rules.len()].copy_from_slice(&rules);
            Ok((
                NET_KEY_TASK_BITS + u32::from(prefix),
                NetKey { task, addr },
                value,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ConnectSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_design_example() {
        let c = parse("127.0.0.1:8080");
        assert_eq!(c.host, Host::Net("127.0.0.1".parse().unwrap(), 32));
        assert_eq!(
            (c.port_lo, c.port_hi, c.protos),
            (8080, 8080, PROTO_TCP | PROTO_UDP)
        );
        let c = parse("10.0.0.0/8:443/tcp");
        assert_eq!(c.host, Host::Net("10.0.0.0".parse().unwrap(), 8));
        assert_eq!(c.protos, PROTO_TCP);
        let c = parse("[::1]:5432");
        assert_eq!(c.host, Host::Net("::1".parse().unwrap(), 128));
        let c = parse("[2001:db8::]/32:*");
        assert_eq!(c.host, Host::Net("2001:db8::".parse().unwrap(), 32));
        assert_eq!((c.port_lo, c.port_hi), (0, 65535));
        let c = parse("192.168.1.10:8000-8100/udp");
        assert_eq!((c.port_lo, c.port_hi, c.protos), (8000, 8100, PROTO_UDP));
        let c = parse("api.github.com:443");
        assert_eq!(c.host, Host::Name("api.github.com".into()));
    }

    #[test]
    fn rejects_bad_specs_naming_the_part() {
        for (spec, needle) in [
            ("", "empty"),
            ("127.0.0.1", "missing :PORTS"),
            ("127.0.0.1:0", "port 0"),
            ("127.0.0.1:70000", "bad port"),
            ("127.0.0.1:9-3", "backwards"),
            ("127.0.0.1:80/icmp", "unknown protocol"),
            ("10.0.0.1/8:80", "host bits set; did you mean 10.0.0.0/8"),
            ("10.0.0.0/33:80", "longer than /32"),
            ("::1:80", "brackets"),
            ("[::1:80", "unclosed"),
            ("bad_host!:80", "neither an IP address nor a DNS name"),
            ("example.com/8:80", "no prefix length"),
        ] {
            let err = spec.parse::<ConnectSpec>().unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{spec:?} gave {err:?}, expected {needle:?}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "10.0.0.0/8:443/tcp",
            "[::1]/128:5432",
            "1.2.3.4/32:*/udp",
            "1.2.3.4/32:10-20",
        ] {
            assert_eq!(parse(s).to_string(), s);
        }
    }

    #[test]
    fn ipv4_grants_are_stored_mapped() {
        let g = parse("127.0.0.0/8:80").to_net_grants("x", 0).unwrap();
        assert_eq!(g[0].prefix, 104);
        assert_eq!(&g[0].addr[10..], &[0xff, 0xff, 127, 0, 0, 0]);
    }

    #[test]
    fn nested_prefixes_inherit_outer_rules() {
        let mut grants = parse("10.0.0.0/8:443").to_net_grants("a", 0).unwrap();
        grants.extend(parse("10.1.0.0/16:80").to_net_grants("b", 0).unwrap());
        let entries = compile_net(7, &grants).unwrap();
        assert_eq!(entries.len(), 2);
        let inner = entries.iter().find(|(p, ..)| *p == 64 + 96 + 16).unwrap();
        assert_eq!(inner.2.len, 2, "the /16 must also allow the /8's port 443");
        let outer = entries.iter().find(|(p, ..)| *p == 64 + 96 + 8).unwrap();
        assert_eq!(outer.2.len, 1);
        assert_eq!(outer.1.task, 7);
    }

    #[test]
    fn too_many_rules_is_an_error() {
        let grants: Vec<_> = (1..=17u16)
            .flat_map(|p| {
                parse(&format!("10.0.0.1:{p}"))
                    .to_net_grants("x", 0)
                    .unwrap()
            })
            .collect();
        assert!(matches!(
            compile_net(1, &grants),
            Err(GrantError::TooManyRules { count: 17, .. })
        ));
    }

    #[test]
    fn exec_grants_resolve_files_and_dirs() {
        let dir = std::env::temp_dir().join(format!("leash-grant-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("tool");
        fs::write(&bin, b"\x7fELF").unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.join("run.sh");
        fs::write(&script, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("data.txt"), b"x").unwrap();

        let files = resolve_exec(&format!("{}/", dir.display())).unwrap();
        assert_eq!(files.len(), 2, "only the executables: {files:?}");
        assert!(files.iter().any(|f| f.script && f.path == script));
        let one = resolve_exec(bin.to_str().unwrap()).unwrap();
        assert_eq!(one[0].ino, fs::metadata(&bin).unwrap().ino());
        assert!(!one[0].script);

        let err = resolve_exec(dir.join("data.txt").to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("not executable"), "{err}");
        let err = resolve_exec("bin/ls").unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
        let err = resolve_exec(dir.join("missing").to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("grant an existing file"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kernel_dev_encoding() {
        // st_dev 8:1 (glibc encoding) is s_dev 8 << 20 | 1.
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(
            kernel_dev(libc::makedev(259, 70_000)),
            (259 << 20) | 0x1_1170
        );
    }
}
