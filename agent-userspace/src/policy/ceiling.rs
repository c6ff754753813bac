//! Ceiling entries (what a rule allows at most) and requested grants, in the form the
//! Cedar policies and entities use. Each grant kind is one [`Kind`]; a new kind (unix
//! sockets today only as a ceiling) is one more arm here and one entity type in the schema.
//! File grants (`read:`, `write:`) grant a hierarchy, so their ceilings do too.

use std::{fmt, net::IpAddr, str::FromStr};

use leash_common::grant::{PROTO_TCP, PROTO_UDP};

use crate::grants::{ConnectSpec, Host};

/// A kind of grant, as it appears in policy files and `KIND:SPEC` strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Exec,
    Connect,
    Unix,
    /// `read:PATH` file grants.
    Read,
    /// `write:PATH` file grants (which imply read).
    Write,
}

impl Kind {
    pub const ALL: [Self; 5] = [
        Self::Exec,
        Self::Connect,
        Self::Unix,
        Self::Read,
        Self::Write,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Connect => "connect",
            Self::Unix => "unix",
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    /// File grants: fixed when the task is created (a Landlock domain cannot widen).
    #[must_use]
    pub fn is_file(self) -> bool {
        matches!(self, Self::Read | Self::Write)
    }

    /// The Cedar entity type of a requested grant of this kind.
    #[must_use]
    pub fn entity_type(self) -> &'static str {
        match self {
            Self::Exec => "Leash::ExecGrant",
            Self::Connect => "Leash::ConnectGrant",
            Self::Unix => "Leash::UnixGrant",
            Self::Read | Self::Write => "Leash::FileGrant",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A grant asked for: its kind and spec, e.g. `exec` `/usr/bin/git`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantSpec {
    pub kind: Kind,
    pub spec: String,
}

impl fmt::Display for GrantSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} grant {}", self.kind, self.spec)
    }
}

impl FromStr for GrantSpec {
    type Err = String;

    /// `exec:/usr/bin/git`, `connect:10.0.0.1:443/tcp`, `unix:/run/x.sock`,
    /// `read:/srv/data`, `write:/srv/out`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, spec) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: write KIND:SPEC, e.g. exec:/usr/bin/git"))?;
        let kind = match kind {
            "exec" => Kind::Exec,
            "connect" => Kind::Connect,
            "unix" => Kind::Unix,
            "read" => Kind::Read,
            "write" => Kind::Write,
            other => {
                return Err(format!(
                    "unknown grant kind {other:?} (exec, connect, unix, read or write)"
                ));
            }
        };
        Ok(Self {
            kind,
            spec: spec.to_owned(),
        })
    }
}

/// Checks a path is absolute and normalized (no `.`/`..`/empty components), so a
/// ceiling on names cannot be escaped with `/allowed/../elsewhere`.
pub(crate) fn normalized_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    let inner = path.trim_start_matches('/').trim_end_matches('/');
    if path.len() > 1
        && inner
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{path:?} is not normalized (no '.', '..' or '//' components)"
        ));
    }
    if path.contains(['"', '\\']) {
        return Err(format!("{path:?} contains a quote or backslash"));
    }
    Ok(())
}

/// The directory part of a path as the ceilings see it: `DIR/` itself for a directory
/// grant, else the parent with a trailing `/`.
#[must_use]
pub(crate) fn dir_of(path: &str) -> String {
    if path.ends_with('/') {
        return path.to_owned();
    }
    match path.rfind('/') {
        Some(i) => path[..=i].to_owned(),
        None => String::new(),
    }
}

/// One ceiling entry compiled to a Cedar condition on `resource`.
pub(crate) fn condition(kind: Kind, entry: &str) -> Result<String, String> {
    match kind {
        Kind::Exec | Kind::Unix => path_condition(entry),
        Kind::Connect => connect_condition(entry),
        Kind::Read | Kind::Write => file_condition(entry),
    }
}

/// A file path as the file ceilings compare it: without a trailing `/` (but `/`).
fn file_path(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    }
}

/// `/srv/data`: that path and its whole hierarchy (`/srv/data/` the same; `/`
/// everything); `/srv/*/src`: a Cedar `like` glob, `*` matching anything, `/` included.
fn file_condition(entry: &str) -> Result<String, String> {
    normalized_path(&entry.replace('*', "x"))?;
    if entry.contains('*') {
        return Ok(format!("resource.path like \"{entry}\""));
    }
    Ok(match file_path(entry) {
        "/" => "true".to_owned(),
        dir => format!("resource.path == \"{dir}\" || resource.path like \"{dir}/*\""),
    })
}

/// `/usr/bin/git`: that file; `/usr/bin/`: any file directly in it (and the directory
/// grant itself); `/opt/tools/*`: a Cedar `like` glob, `*` matching anything.
fn path_condition(entry: &str) -> Result<String, String> {
    normalized_path(&entry.replace('*', "x"))?;
    Ok(if entry.contains('*') {
        format!("resource.path like \"{entry}\"")
    } else if entry.ends_with('/') {
        format!("resource.dir == \"{entry}\"")
    } else {
        format!("resource.path == \"{entry}\"")
    })
}

/// `HOST:PORTS[/PROTO]` like a connect grant, where HOST may be an address with a
/// prefix (any sub-range is allowed), a DNS name, or `*.domain` (any name under it).
fn connect_condition(entry: &str) -> Result<String, String> {
    let (pattern, parse_as) = match entry.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, entry),
    };
    let c: ConnectSpec = parse_as.parse().map_err(|e| format!("{e}"))?;
    let host = match &c.host {
        Host::Net(ip, prefix) => {
            format!(
                "resource has net && resource.net.isInRange(ip(\"{}\"))",
                net_text(*ip, *prefix)
            )
        }
        Host::Name(n) if pattern => {
            format!(
                "resource.is_name && resource.host like \"*.{}\"",
                n.to_ascii_lowercase()
            )
        }
        Host::Name(n) => format!(
            "resource.is_name && resource.host == \"{}\"",
            n.to_ascii_lowercase()
        ),
        Host::Wildcard(_) => {
            return Err(format!(
                "{entry:?}: one wildcard label only, as in *.example.com:443"
            ));
        }
    };
    let mut cond = format!(
        "{host} && resource.port_lo >= {} && resource.port_hi <= {}",
        c.port_lo, c.port_hi
    );
    if c.protos & PROTO_UDP == 0 {
        cond.push_str(" && !resource.udp");
    }
    if c.protos & PROTO_TCP == 0 {
        cond.push_str(" && !resource.tcp");
    }
    Ok(cond)
}

/// Attributes of a requested grant's entity, or why it cannot be evaluated.
pub(crate) enum Attr {
    Str(String),
    Long(i64),
    Bool(bool),
    Ip(String),
}

pub(crate) fn attributes(g: &GrantSpec) -> Result<Vec<(&'static str, Attr)>, String> {
    match g.kind {
        Kind::Exec | Kind::Unix => {
            normalized_path(&g.spec)?;
            // A tree (`DIR/**`) is not a file of `DIR/`: only a glob ceiling above it
            // (`/opt/*`) or the same tree admits it.
            let dir = if g.spec.ends_with("/**") {
                g.spec.clone()
            } else {
                dir_of(&g.spec)
            };
            Ok(vec![
                ("path", Attr::Str(g.spec.clone())),
                ("dir", Attr::Str(dir)),
            ])
        }
        Kind::Read | Kind::Write => {
            normalized_path(&g.spec)?;
            Ok(vec![("path", Attr::Str(file_path(&g.spec).to_owned()))])
        }
        Kind::Connect => {
            let c: ConnectSpec = g.spec.parse().map_err(|e| format!("{e}"))?;
            let mut attrs = vec![
                ("port_lo", Attr::Long(i64::from(c.port_lo))),
                ("port_hi", Attr::Long(i64::from(c.port_hi))),
                ("tcp", Attr::Bool(c.protos & PROTO_TCP != 0)),
                ("udp", Attr::Bool(c.protos & PROTO_UDP != 0)),
            ];
            match c.host {
                Host::Net(ip, prefix) => {
                    attrs.push(("host", Attr::Str(ip.to_string())));
                    attrs.push(("is_name", Attr::Bool(false)));
                    attrs.push(("net", Attr::Ip(net_text(ip, prefix))));
                }
                Host::Name(n) => {
                    attrs.push(("host", Attr::Str(n)));
                    attrs.push(("is_name", Attr::Bool(true)));
                }
                // Within a ceiling `*.D` (Cedar's `like` matches the `*` too), never
                // within a single name.
                Host::Wildcard(apex) => {
                    attrs.push(("host", Attr::Str(format!("*.{apex}"))));
                    attrs.push(("is_name", Attr::Bool(true)));
                }
            }
            Ok(attrs)
        }
    }
}

/// `ADDR/PREFIX` as Cedar's `ip()` reads it: IPv6 always in hex groups, since Cedar
/// refuses the dotted form Rust prints for `::ffff:a.b.c.d`.
fn net_text(ip: IpAddr, prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/{prefix}"),
        IpAddr::V6(v6) => {
            let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:x}")).collect();
            format!("{}/{prefix}", groups.join(":"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_normalized() {
        assert!(normalized_path("/usr/bin/git").is_ok());
        assert!(normalized_path("/usr/bin/").is_ok());
        assert!(normalized_path("/").is_ok());
        for bad in [
            "usr/bin",
            "/usr/../bin/sh",
            "/usr//bin",
            "/usr/./bin",
            "/a\"b",
        ] {
            assert!(normalized_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dir_of_paths() {
        assert_eq!(dir_of("/usr/bin/git"), "/usr/bin/");
        assert_eq!(dir_of("/usr/bin/"), "/usr/bin/");
        assert_eq!(dir_of("/git"), "/");
    }

    #[test]
    fn grant_spec_syntax() {
        let g: GrantSpec = "connect:10.0.0.1:443/tcp".parse().unwrap();
        assert_eq!(
            (g.kind, g.spec.as_str()),
            (Kind::Connect, "10.0.0.1:443/tcp")
        );
        assert!("ftp:/x".parse::<GrantSpec>().is_err());
        assert!("/usr/bin/git".parse::<GrantSpec>().is_err());
    }

    #[test]
    fn conditions() {
        assert_eq!(
            condition(Kind::Exec, "/usr/bin/").unwrap(),
            "resource.dir == \"/usr/bin/\""
        );
        let c = condition(Kind::Connect, "10.0.0.0/8:443/tcp").unwrap();
        assert!(
            c.contains("isInRange(ip(\"10.0.0.0/8\"))") && c.contains("!resource.udp"),
            "{c}"
        );
        let c = condition(Kind::Connect, "*.github.com:443").unwrap();
        assert!(c.contains("like \"*.github.com\""), "{c}");
        assert_eq!(
            condition(Kind::Write, "/srv/out/").unwrap(),
            "resource.path == \"/srv/out\" || resource.path like \"/srv/out/*\""
        );
        assert_eq!(condition(Kind::Read, "/").unwrap(), "true");
        assert!(condition(Kind::Read, "/srv/../etc").is_err());
        assert!(condition(Kind::Exec, "bin/git").is_err());
        assert!(condition(Kind::Connect, "10.0.0.0/8").is_err());
    }
}
