//! From a refused (or audited) decision to what would have allowed it: the grant, in
//! the syntax `leash run` and `leash grant add` take, or why no grant can.

use std::{fmt, net::IpAddr};

use crate::protocol::{AuditEvent, SuggestedGrant};

/// Landlock access rights that only a write grant covers (`fs.read_*` are covered by
/// a read grant).
const WRITE_ACCESS: [&str; 4] = ["write", "make_", "remove_", "truncate"];

/// Which list a grant goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GrantList {
    Exec,
    Connect,
    Read,
    Write,
}

impl GrantList {
    /// The flag of `leash run` and `leash task create`.
    #[must_use]
    pub const fn run_flag(self) -> &'static str {
        match self {
            Self::Exec => "--allow-exec",
            Self::Connect => "--allow-connect",
            Self::Read => "--allow-read",
            Self::Write => "--allow-write",
        }
    }

    /// The list's name in the API (`exec`, `connect`, `read`, `write`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Connect => "connect",
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    /// The list named `name` in the API.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Exec, Self::Connect, Self::Read, Self::Write]
            .into_iter()
            .find(|l| l.as_str() == name)
    }

    /// `leash grant add ID` and its flag with the spec, for a task that already runs.
    /// File grants cannot be added to a running task (its Landlock domain is fixed).
    #[must_use]
    pub fn grant_add(self, task: &str, spec: &str) -> Option<String> {
        match self {
            Self::Exec => Some(format!("leash grant add {task} --exec {spec}")),
            Self::Connect => Some(format!("leash grant add {task} --connect {spec}")),
            Self::Read | Self::Write => None,
        }
    }
}

/// What would have allowed a decision.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Remedy {
    /// This grant, e.g. `--allow-exec /usr/bin/curl`.
    Grant { list: GrantList, spec: String },
    /// A name grant: the port is the one the task connects to, which a DNS query does
    /// not say.
    Name(String),
    /// No grant: what to do instead.
    Other(&'static str),
}

impl fmt::Display for Remedy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Grant { list, spec } => write!(f, "{} {spec}", list.run_flag()),
            Self::Name(name) => write!(
                f,
                "--allow-connect {name}:PORT (the port it connects to on that name)"
            ),
            Self::Other(what) => f.write_str(what),
        }
    }
}

/// What would have allowed `e`. `None` for an event that refused nothing.
#[must_use]
pub fn remedy(e: &AuditEvent) -> Option<Remedy> {
    if e.verdict != "denied" && e.verdict != "audited" {
        return None;
    }
    let t = &e.target;
    let text = |key: &str| t.get(key).and_then(serde_json::Value::as_str);
    let grant = |list, spec: String| Some(Remedy::Grant { list, spec });
    let by_reason = match e.reason.as_str() {
        "task_expired" => Some("the task's TTL had run out: give it a longer --ttl"),
        "task_ended" | "task_unknown" => {
            Some("the task had ended: a process outlived it; run it in a task of its own")
        }
        "pending_approval" => Some("its grant waits for approval: leash approve TASK GRANT"),
        "changed_since_grant" => Some(
            "the file changed after it was granted: grant it again if the new content is trusted",
        ),
        "unix_other_view" | "unix_other_socket" => Some(
            "the socket is not the one granted (another mount namespace, root or file): grant it as this process names it",
        ),
        "unix_socket_absent" => Some(
            "no socket is bound there (a probe: glibc looks for nscd this way); harmless, no grant needed",
        ),
        "io_uring_not_granted" => return grant(GrantList::Connect, "socket:io_uring".into()),
        _ => None,
    };
    if let Some(what) = by_reason {
        return Some(Remedy::Other(what));
    }
    let not_granted = matches!(
        e.reason.as_str(),
        "not_granted" | "interpreter_not_granted" | "script_not_granted" | "family_not_granted"
    );
    if !not_granted {
        return Some(Remedy::Other(
            "not grantable: leash refuses this to every task",
        ));
    }
    match e.kind.as_str() {
        // The portable backend compares a script's exec path as given, uncleaned.
        "exec" if e.reason == "script_not_granted" => match text("path") {
            Some(p) if p.starts_with('/') && clean(p) => grant(GrantList::Exec, p.into()),
            Some(p) if p.starts_with('/') => Some(Remedy::Other(
                "a script run by a path with '.', '..' or '//' in it: run it by its clean absolute path, and grant that",
            )),
            _ => Some(Remedy::Other(
                "a script run by a relative path: run it by its absolute path, and grant that",
            )),
        },
        "exec" => text("real")
            .or_else(|| text("path"))
            .map(|p| Remedy::Grant {
                list: GrantList::Exec,
                spec: p.into(),
            }),
        "connect" | "send" => connect_remedy(t),
        "socket" => socket_family(t).and_then(|f| grant(GrantList::Connect, format!("socket:{f}"))),
        "dns" => text("name").map(|n| Remedy::Name(n.trim_end_matches('.').to_owned())),
        "file" => {
            let access = text("access").unwrap_or_default();
            let list = if WRITE_ACCESS.iter().any(|w| access.contains(w)) {
                GrantList::Write
            } else {
                GrantList::Read
            };
            text("path").map(|p| Remedy::Grant {
                list,
                spec: p.into(),
            })
        }
        _ => None,
    }
}

/// Whether an absolute path has no `.`, `..` or empty component.
fn clean(path: &str) -> bool {
    path[1..]
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The grant and the note of a refusal's entry in `GET /v1/tasks/{id}/suggestion`.
#[must_use]
pub fn grant_and_note(r: Option<Remedy>) -> (Option<SuggestedGrant>, Option<String>) {
    match r {
        Some(Remedy::Grant { list, spec }) => (
            Some(SuggestedGrant {
                list: list.as_str().into(),
                spec,
            }),
            None,
        ),
        Some(r @ Remedy::Name(_)) => (None, Some(r.to_string())),
        Some(Remedy::Other(what)) => (None, Some(what.into())),
        None => (None, None),
    }
}

/// The target of a refusal in a few words: an exec's file (naming the interpreter and
/// its script apart), an address, a unix name, a DNS name, a file and its access.
#[must_use]
pub fn describe(e: &AuditEvent) -> String {
    let t = &e.target;
    let s = |k: &str| t.get(k).and_then(serde_json::Value::as_str);
    match e.kind.as_str() {
        "exec" => {
            let path = s("path").unwrap_or("?");
            match (s("role"), s("real")) {
                (Some("interpreter"), Some(real)) => {
                    format!("{real} (the interpreter of {path})")
                }
                (_, Some(real)) if real != path => format!("{path} (= {real})"),
                _ => path.to_owned(),
            }
        }
        "connect" | "send" => match connect_remedy(t) {
            Some(Remedy::Grant { spec, .. }) => spec,
            _ => t.to_string(),
        },
        "dns" => format!("{} {}", s("name").unwrap_or("?"), s("type").unwrap_or("")),
        "file" => format!(
            "{} ({})",
            s("path").unwrap_or("?"),
            s("access").unwrap_or("?")
        ),
        _ => t.to_string(),
    }
}

/// `ADDR:PORT/PROTO` or `unix:NAME` of a connect or send target.
fn connect_remedy(t: &serde_json::Value) -> Option<Remedy> {
    let spec = if let Some(name) = t.get("unix").and_then(serde_json::Value::as_str) {
        format!("unix:{name}")
    } else {
        let addr: IpAddr = t.get("addr")?.as_str()?.parse().ok()?;
        let port = t.get("port")?.as_u64()?;
        let proto = t.get("protocol").and_then(serde_json::Value::as_str);
        let host = match addr {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or_else(|| format!("[{v6}]"), |v4| v4.to_string()),
            IpAddr::V4(v4) => v4.to_string(),
        };
        match proto {
            Some(p @ ("tcp" | "udp")) => format!("{host}:{port}/{p}"),
            _ => format!("{host}:{port}"),
        }
    };
    Some(Remedy::Grant {
        list: GrantList::Connect,
        spec,
    })
}

/// The `socket:` name of a refused socket's family, if one can be granted.
fn socket_family(t: &serde_json::Value) -> Option<&'static str> {
    const AF_INET: u64 = 2;
    const AF_INET6: u64 = 10;
    const AF_NETLINK: u64 = 16;
    const AF_PACKET: u64 = 17;
    const AF_VSOCK: u64 = 40;
    match t.get("family")?.as_u64()? {
        AF_INET | AF_INET6 => Some("raw"),
        AF_NETLINK => Some("netlink"),
        AF_PACKET => Some("packet"),
        AF_VSOCK => Some("vsock"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, reason: &str, target: serde_json::Value) -> AuditEvent {
        AuditEvent {
            ts: String::new(),
            task: "00ab".into(),
            agent: "cli".into(),
            spiffe_id: String::new(),
            intent: None,
            pid: Some(1),
            comm: String::new(),
            kind: kind.into(),
            verdict: "denied".into(),
            target,
            reason: reason.into(),
            chain: Vec::new(),
        }
    }

    fn shown(kind: &str, reason: &str, target: serde_json::Value) -> String {
        remedy(&event(kind, reason, target)).unwrap().to_string()
    }

    #[test]
    fn each_refusal_names_its_grant() {
        let exec = json!({"path": "/usr/bin/python3", "real": "/usr/bin/python3.12"});
        assert_eq!(
            shown("exec", "not_granted", exec),
            "--allow-exec /usr/bin/python3.12"
        );
        let interp = json!({"path": "/w/s.sh", "role": "interpreter", "real": "/usr/bin/env"});
        assert_eq!(
            shown("exec", "interpreter_not_granted", interp),
            "--allow-exec /usr/bin/env"
        );
        assert_eq!(
            shown("exec", "script_not_granted", json!({"path": "/w/s.sh"})),
            "--allow-exec /w/s.sh"
        );
        assert!(
            shown("exec", "script_not_granted", json!({"path": "./s.sh"})).contains("absolute")
        );
        for unclean in ["/w/./s.sh", "/w/../w/s.sh", "/w//s.sh"] {
            let shown = shown("exec", "script_not_granted", json!({ "path": unclean }));
            assert!(shown.contains("clean absolute path"), "{unclean}: {shown}");
        }
        let net = json!({"addr": "::ffff:127.0.0.1", "port": 8080, "protocol": "tcp"});
        assert_eq!(
            shown("connect", "not_granted", net),
            "--allow-connect 127.0.0.1:8080/tcp"
        );
        let v6 = json!({"addr": "::1", "port": 53, "protocol": "udp"});
        assert_eq!(
            shown("send", "not_granted", v6),
            "--allow-connect [::1]:53/udp"
        );
        let unix = json!({"unix": "/run/app.sock"});
        assert_eq!(
            shown("connect", "not_granted", unix),
            "--allow-connect unix:/run/app.sock"
        );
        let netlink = json!({"family": 16, "type": 3, "protocol": 0});
        assert_eq!(
            shown("socket", "family_not_granted", netlink),
            "--allow-connect socket:netlink"
        );
        assert!(
            shown("dns", "not_granted", json!({"name": "x.test."}))
                .starts_with("--allow-connect x.test:PORT")
        );
        let write = json!({"access": "fs.write_file", "path": "/srv/out"});
        assert_eq!(
            shown("file", "not_granted", write),
            "--allow-write /srv/out"
        );
        let read = json!({"access": "fs.read_file", "path": "/srv/in"});
        assert_eq!(shown("file", "not_granted", read), "--allow-read /srv/in");
        assert_eq!(
            shown("tamper", "io_uring_not_granted", json!({})),
            "--allow-connect socket:io_uring"
        );
    }

    #[test]
    fn what_no_grant_allows_says_so() {
        assert!(shown("exec", "task_expired", json!({})).contains("--ttl"));
        assert!(shown("tamper", "leash_bpf", json!({})).starts_with("not grantable"));
        assert!(shown("connect", "pending_approval", json!({})).contains("approve"));
        assert!(shown("connect", "unix_socket_absent", json!({})).contains("no grant needed"));
        let mut allowed = event("exec", "granted", json!({"path": "/bin/ls"}));
        allowed.verdict = "allowed".into();
        assert_eq!(remedy(&allowed), None);
        assert_eq!(
            GrantList::Exec.grant_add("00ab", "/bin/ls").as_deref(),
            Some("leash grant add 00ab --exec /bin/ls")
        );
        assert_eq!(GrantList::Read.grant_add("00ab", "/x"), None);
    }
}
