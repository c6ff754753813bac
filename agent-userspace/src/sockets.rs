//! Socket grants, given in the `connect` list next to address grants:
//!
//! - `unix:/abs/path`: connect or send to the unix socket bound at that path, as the
//!   caller names it (a relative path or another name for it is denied: fail closed);
//! - `unix:@name`: the abstract unix socket `name`;
//! - `socket:raw|packet|netlink|vsock`: create sockets of that kind at all (raw covers
//!   raw IP and every IP protocol other than TCP and UDP);
//! - `socket:io_uring`: create `io_uring` instances at all. Its operations bypass the
//!   syscall-level checks (docs/security.md says which), so no task has it by default.
//!
//! Without them a tagged process may create unix, TCP and UDP sockets only, and reach
//! no unix socket by name. Other families (Bluetooth, CAN, `AF_ALG`, XDP, ...) cannot be
//! granted.

use std::fmt;

use leash_common::{
    UnixKey,
    grant::UNIX_PATH_LEN,
    task::{FAMILY_IO_URING, FAMILY_NETLINK, FAMILY_PACKET, FAMILY_RAW, FAMILY_VSOCK},
};

use crate::grants::GrantError;

/// `sun_path` holds at most this many bytes (a path's NUL included).
pub(crate) const SUN_PATH: usize = leash_common::grant::SUN_PATH_LEN;

/// Kinds `socket:` can name.
pub const FAMILIES: [(&str, u32); 5] = [
    ("raw", FAMILY_RAW),
    ("packet", FAMILY_PACKET),
    ("netlink", FAMILY_NETLINK),
    ("vsock", FAMILY_VSOCK),
    ("io_uring", FAMILY_IO_URING),
];

/// A unix socket name as the kernel compares it: path bytes, or NUL then an abstract name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnixName(Vec<u8>);

impl UnixName {
    #[must_use]
    pub fn key(&self, task: u64) -> UnixKey {
        let mut path = [0u8; UNIX_PATH_LEN];
        path[..self.0.len()].copy_from_slice(&self.0);
        UnixKey { task, path }
    }
}

impl fmt::Display for UnixName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_first() {
            Some((0, name)) => write!(f, "@{}", String::from_utf8_lossy(name)),
            _ => f.write_str(&String::from_utf8_lossy(&self.0)),
        }
    }
}

/// A parsed socket grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketGrant {
    Unix(UnixName),
    /// `FAMILY_*` bits.
    Family(u32),
}

fn bad(spec: &str, reason: impl Into<String>) -> GrantError {
    GrantError::BadSocket {
        spec: spec.to_owned(),
        reason: reason.into(),
    }
}

/// Parses `spec` if it is a socket grant (`unix:` or `socket:`); `None` for any other
/// connect grant.
#[must_use]
pub fn parse(spec: &str) -> Option<Result<SocketGrant, GrantError>> {
    let s = spec.trim();
    if let Some(name) = s.strip_prefix("unix:") {
        return Some(parse_unix(spec, name));
    }
    let family = s.strip_prefix("socket:")?;
    Some(
        FAMILIES
            .iter()
            .find(|(n, _)| *n == family)
            .map(|(_, bit)| SocketGrant::Family(*bit))
            .ok_or_else(|| {
                let names: Vec<&str> = FAMILIES.iter().map(|(n, _)| *n).collect();
                bad(
                    spec,
                    format!(
                        "unknown socket kind {family:?} (use one of {}; unix sockets are granted as unix:/path)",
                        names.join(", ")
                    ),
                )
            }),
    )
}

fn parse_unix(spec: &str, name: &str) -> Result<SocketGrant, GrantError> {
    let bytes = if let Some(abstract_name) = name.strip_prefix('@') {
        if abstract_name.is_empty() {
            return Err(bad(spec, "empty abstract socket name after @"));
        }
        let mut b = vec![0u8];
        b.extend_from_slice(abstract_name.as_bytes());
        b
    } else if name.starts_with('/') {
        name.as_bytes().to_vec()
    } else if name.is_empty() {
        return Err(bad(spec, "missing the socket path"));
    } else {
        return Err(bad(
            spec,
            "the path must be absolute (the kernel compares the name the caller passes)",
        ));
    };
    if bytes.len() > SUN_PATH {
        return Err(bad(
            spec,
            format!("longer than the {SUN_PATH} bytes a unix socket name can have"),
        ));
    }
    if bytes[1..].contains(&0) {
        return Err(bad(spec, "contains a NUL byte"));
    }
    Ok(SocketGrant::Unix(UnixName(bytes)))
}

/// The `FAMILY_*` bits the `socket:` grants among `specs` give (bad specs ignored:
/// compiling the grants reports them).
#[must_use]
pub fn families_of<S: AsRef<str>>(specs: &[S]) -> u32 {
    specs
        .iter()
        .filter_map(|s| parse(s.as_ref()).and_then(Result::ok))
        .fold(0, |acc, g| match g {
            SocketGrant::Family(bit) => acc | bit,
            SocketGrant::Unix(_) => acc,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(spec: &str) -> SocketGrant {
        parse(spec).expect("a socket grant").expect("valid")
    }

    fn err(spec: &str) -> String {
        parse(spec)
            .expect("a socket grant")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_paths_abstract_names_and_families() {
        let SocketGrant::Unix(path) = ok("unix:/run/app.sock") else {
            panic!("not unix")
        };
        assert_eq!(path.to_string(), "/run/app.sock");
        assert_eq!(&path.key(7).path[..13], b"/run/app.sock");
        assert_eq!(path.key(7).path[13], 0);
        let SocketGrant::Unix(abs) = ok("unix:@bus") else {
            panic!("not unix")
        };
        assert_eq!(abs.to_string(), "@bus");
        assert_eq!(&abs.key(1).path[..4], b"\0bus");
        assert_eq!(ok("socket:netlink"), SocketGrant::Family(FAMILY_NETLINK));
        assert_eq!(ok(" socket:raw "), SocketGrant::Family(FAMILY_RAW));
        assert_eq!(ok("socket:io_uring"), SocketGrant::Family(FAMILY_IO_URING));
        assert!(
            parse("127.0.0.1:80").is_none(),
            "address grants are not ours"
        );
        assert_eq!(
            families_of(&["socket:packet", "socket:vsock", "unix:/x", "1.2.3.4:5"]),
            FAMILY_PACKET | FAMILY_VSOCK
        );
    }

    #[test]
    fn rejects_bad_socket_grants_naming_the_problem() {
        assert!(err("unix:run/app.sock").contains("absolute"));
        assert!(err("unix:").contains("missing"));
        assert!(err("unix:@").contains("empty abstract"));
        assert!(err(&format!("unix:/{}", "a".repeat(108))).contains("108 bytes"));
        assert!(err("unix:/a\0b").contains("NUL"));
        assert!(err("socket:bluetooth").contains("unknown socket kind"));
        assert!(err("socket:").contains("raw, packet, netlink, vsock, io_uring"));
        assert!(err("socket:uring").contains("unknown socket kind"));
    }
}
