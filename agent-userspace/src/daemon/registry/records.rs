//! What the daemon keeps of a task and its grants: the state file's records, and the
//! views the API returns.

use std::collections::HashSet;

use leash_common::{
    ExecKey, ScriptKey, TaskInfo, TaskMode, TaskState as KState, UnixKey,
    task::FAMILY_NETLINK_ROUTE,
};
use serde::{Deserialize, Serialize};

use crate::{
    clock,
    grants::{SocketFile, UnixView, dev_text, file_state::FileState},
    protocol::{self, EndReason, EndWhen, GrantKind, Mode, TaskId, TaskState},
};

/// One grant, resolved when it was added (an exec grant is bound to the inode it named
/// then), and kept in that form across daemon restarts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantRecord {
    pub id: String,
    pub kind: GrantKind,
    pub spec: String,
    /// `CLOCK_BOOTTIME` ns; 0 = with the task.
    pub expires_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub files: Vec<FileRecord>,
    #[serde(default)]
    pub nets: Vec<NetRecord>,
    /// Waiting for approval until this `CLOCK_BOOTTIME` ns (0: not pending). A pending
    /// grant is resolved but not in the kernel, so the kernel denies it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending_ns: u64,
    /// `unix:` grants: the socket name as written after `unix:`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unix: Vec<String>,
    /// A `unix:` path grant: the mount namespace and root it was granted in, where
    /// alone the name holds. Absent in state written before it was kept: such a path
    /// grant holds nowhere until granted again (fail closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_view: Option<UnixView>,
    /// A `unix:` path grant: the socket file the name named (lsm backend). Absent until
    /// the socket exists: the daemon looks again on each sweep and records the first
    /// socket it finds there; until then the lsm backend reaches nothing through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_socket: Option<SocketFile>,
    /// `socket:` grants: `FAMILY_*` bits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub families: u32,
    /// Who asked for a grant that waits for approval (approval needs another party).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<super::super::approval::Identity>,
    /// A child task's grant: the ids of the parent's grants it is within.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived_from: Vec<String>,
}

impl GrantRecord {
    /// The socket families the grant lets the kernel allow: its `socket:` bits, and for
    /// a live name grant the route netlink socket the C library's resolver opens to
    /// sort an answer of several addresses (without it, glibc's `getaddrinfo` is killed
    /// there on the portable backend). Pending grants imply nothing.
    fn families(&self) -> u32 {
        let name = self.kind == GrantKind::Connect
            && self.pending_ns == 0
            && crate::dns::NameGrant::parse(&self.spec, 0).is_some();
        self.families | if name { FAMILY_NETLINK_ROUTE } else { 0 }
    }
}

/// serde's `skip_serializing_if` takes a reference.
fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: String,
    pub dev: u32,
    pub ino: u64,
    pub script: bool,
    /// The file's state when granted; absent in state written before it was kept,
    /// and then only the identity is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<FileState>,
    /// A `DIR/**` grant's directory: any file below it may run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tree: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetRecord {
    pub addr: [u8; 16],
    pub prefix: u8,
    pub port_lo: u16,
    pub port_hi: u16,
    pub protos: u8,
}

/// A task as the daemon keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: u64,
    pub agent: String,
    pub intent: Option<String>,
    pub mode: Mode,
    pub state: TaskState,
    pub end_reason: Option<EndReason>,
    pub created_at: String,
    /// `CLOCK_BOOTTIME` ns; 0 = none.
    pub expires_ns: u64,
    pub expires_at: Option<String>,
    pub ended_at: Option<String>,
    pub grants: Vec<GrantRecord>,
    pub next_grant: u32,
    pub attached_pids: Vec<u32>,
    pub counter_slot: u32,
    /// When the task ends on its own (see `lifetime`).
    #[serde(default = "super::super::lifetime::legacy_end_when")]
    pub end_when: EndWhen,
    /// The command a `command_exits` task ends with, once attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<super::super::lifetime::CommandRecord>,
    /// Its DNS slot (1-based; 0: none yet): the loopback address its DNS is sent to.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dns_slot: u32,
    /// The resolvers of the task's own `resolv.conf`, read when a process attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// Addresses learned from the task's DNS answers: host grants until they expire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learned: Vec<LearnedRecord>,
    /// The file rules `leash run` applies; `None` for a task recorded by a daemon
    /// without them (`open`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<protocol::FileRules>,
    /// A child task's ancestors (delegation), the root task first, its parent last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<u64>,
    /// A break-glass task: outside the policy's ceilings, with why and who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<protocol::BreakGlassInfo>,
    /// What is in the kernel for this task now, so changes touch only their own
    /// entries instead of scanning whole maps. Rebuilt from the maps on adoption.
    #[serde(skip)]
    pub installed: Installed,
}

/// An address a task's DNS answer gave for a granted name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedRecord {
    /// Mapped form (IPv4 as `::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    pub port_lo: u16,
    pub port_hi: u16,
    pub protos: u8,
    /// `CLOCK_BOOTTIME` ns.
    pub expires_ns: u64,
    /// The name that was asked for.
    pub name: String,
}

/// Kernel entries installed for one task.
#[derive(Clone, Debug, Default)]
pub struct Installed {
    pub exec: HashSet<ExecKey>,
    pub scripts: HashSet<ScriptKey>,
    pub net: HashSet<(u32, [u8; 16])>,
    pub unix: HashSet<UnixKey>,
    pub unix_sockets: HashSet<ExecKey>,
}

impl Installed {
    /// From the keys found in the kernel's maps.
    #[must_use]
    pub fn from_keys(keys: &crate::kernel::maps::TaskKeys) -> Self {
        Self {
            exec: keys.exec.iter().copied().collect(),
            scripts: keys.scripts.iter().copied().collect(),
            net: keys.net.iter().map(|(p, k)| (*p, k.addr)).collect(),
            unix: keys.unix.iter().copied().collect(),
            unix_sockets: keys.unix_sockets.iter().copied().collect(),
        }
    }
}

/// An address in its own family.
#[must_use]
pub fn unmapped(addr: [u8; 16]) -> std::net::IpAddr {
    let v6 = std::net::Ipv6Addr::from(addr);
    v6.to_ipv4_mapped()
        .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4)
}

pub(super) fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Wall-clock time of a `CLOCK_BOOTTIME` instant.
#[must_use]
pub fn wall_of_boot_ns(boot_ns: u64) -> String {
    let now_boot = clock::boottime_ns();
    let now = time::OffsetDateTime::now_utc();
    let delta =
        time::Duration::nanoseconds(i64::try_from(boot_ns.abs_diff(now_boot)).unwrap_or(i64::MAX));
    rfc3339(if boot_ns >= now_boot {
        now + delta
    } else {
        now - delta
    })
}

impl TaskRecord {
    /// A task just created from `req`, with its resolved grants.
    pub(super) fn new(
        id: u64,
        req: &protocol::CreateTask,
        grants: Vec<GrantRecord>,
        expires_ns: u64,
        counter_slot: u32,
        files: protocol::FileRules,
    ) -> Self {
        Self {
            id,
            agent: req.agent.clone(),
            intent: req.intent.clone(),
            mode: req.mode.unwrap_or_default(),
            state: TaskState::Created,
            end_reason: None,
            created_at: now_rfc3339(),
            expires_ns,
            expires_at: Some(wall_of_boot_ns(expires_ns)),
            ended_at: None,
            next_grant: grants.len() as u32 + 1,
            grants,
            attached_pids: Vec::new(),
            counter_slot,
            end_when: req.end_when.unwrap_or_default(),
            command: None,
            dns_slot: 0,
            dns_upstreams: Vec::new(),
            learned: Vec::new(),
            files: Some(files),
            chain: Vec::new(),
            break_glass: None,
            installed: Installed::default(),
        }
    }

    /// The printable ids of its ancestors, root first.
    #[must_use]
    pub fn chain_strings(&self) -> Vec<String> {
        self.chain.iter().map(|&p| TaskId(p).to_string()).collect()
    }

    #[must_use]
    pub fn id_string(&self) -> String {
        TaskId(self.id).to_string()
    }

    #[must_use]
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/agent/{}/task/{}",
            self.agent,
            self.id_string()
        )
    }

    #[must_use]
    pub fn view(&self, trust_domain: &str) -> protocol::Task {
        protocol::Task {
            id: self.id_string(),
            agent: self.agent.clone(),
            spiffe_id: self.spiffe_id(trust_domain),
            intent: self.intent.clone(),
            mode: self.mode,
            state: self.state,
            end_when: self.end_when,
            end_reason: self.end_reason,
            created_at: self.created_at.clone(),
            expires_at: self.expires_at.clone(),
            ended_at: self.ended_at.clone(),
            grants: self
                .grants
                .iter()
                .map(|g| protocol::Grant {
                    id: g.id.clone(),
                    kind: g.kind,
                    spec: g.spec.clone(),
                    expires_at: g.expires_at.clone(),
                    pending_until: (g.pending_ns != 0).then(|| wall_of_boot_ns(g.pending_ns)),
                    resolved: g
                        .files
                        .iter()
                        .map(|f| format!("{} {}:{}", f.path, dev_text(f.dev), f.ino))
                        .chain(g.nets.iter().map(|n| {
                            let v6 = std::net::Ipv6Addr::from(n.addr);
                            match v6.to_ipv4_mapped() {
                                Some(v4) if n.prefix >= 96 => format!("{v4}/{}", n.prefix - 96),
                                _ => format!("{v6}/{}", n.prefix),
                            }
                        }))
                        // A unix path grant's socket file, once the daemon has seen it.
                        .chain(
                            g.unix_socket
                                .iter()
                                .zip(&g.unix)
                                .map(|(f, name)| format!("{name} {}:{}", dev_text(f.dev), f.ino)),
                        )
                        .collect(),
                    derived_from: g.derived_from.clone(),
                })
                .collect(),
            attached_pids: self.attached_pids.clone(),
            parent: self.chain.last().map(|&p| TaskId(p).to_string()),
            chain: self.chain_strings(),
            break_glass: self.break_glass.clone(),
            learned: self
                .learned
                .iter()
                .map(|l| protocol::LearnedAddress {
                    name: l.name.clone(),
                    address: unmapped(l.addr).to_string(),
                    ports: crate::grants::ConnectSpec {
                        host: crate::grants::Host::Name(String::new()),
                        port_lo: l.port_lo,
                        port_hi: l.port_hi,
                        protos: l.protos,
                    }
                    .to_string(),
                    expires_at: wall_of_boot_ns(l.expires_ns),
                })
                .collect(),
            files: self.files.clone(),
            file_enforcement: crate::files::enforcement(
                self.files
                    .as_ref()
                    .map_or(protocol::FileMode::Open, |f| f.mode),
            ),
        }
    }

    pub(super) fn kernel_info(&self) -> TaskInfo {
        TaskInfo {
            expires_ns: self.expires_ns,
            state: KState::Active as u32,
            mode: match self.mode {
                Mode::Enforce => TaskMode::Enforce,
                Mode::Audit => TaskMode::Audit,
            } as u32,
            counter_slot: self.counter_slot,
            families: self.grants.iter().fold(0, |acc, g| acc | g.families()),
        }
    }

    #[must_use]
    pub fn is_live(&self) -> bool {
        self.state != TaskState::Ended
    }
}

#[cfg(test)]
mod tests {
    use leash_common::task::FAMILY_NETLINK;

    use super::{
        super::{ResolveIn, resolve},
        *,
    };

    fn grant(kind: GrantKind, spec: &str) -> GrantRecord {
        resolve(kind, spec, "g1".into(), 0, &ResolveIn::own()).unwrap()
    }

    #[test]
    fn a_live_name_grant_implies_route_netlink_alone() {
        let name = grant(GrantKind::Connect, "*.example.test:443/tcp");
        assert_eq!(name.families(), FAMILY_NETLINK_ROUTE);
        let pending = GrantRecord {
            pending_ns: 1,
            ..name
        };
        assert_eq!(pending.families(), 0);
        assert_eq!(grant(GrantKind::Connect, "10.0.0.0/8:443").families(), 0);
        assert_eq!(
            grant(GrantKind::Connect, "socket:netlink").families(),
            FAMILY_NETLINK
        );
    }
}
