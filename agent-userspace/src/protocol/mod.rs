//! JSON shapes of the Unix-socket API (docs/api.md). Shared by the server and the CLI,
//! so the two cannot drift apart.

use serde::{Deserialize, Serialize};
mod task_id;
pub use task_id::{BadTaskId, TaskId};

mod break_glass;
pub use break_glass::{BreakGlass, BreakGlassInfo};

mod choices;
pub use choices::{AttachScope, BackendChoice};

mod files;
pub use files::{FileMode, FileRules};

mod filters;
pub use filters::{EventFilter, EventMatch, FilterError, TaskFilter};

mod refusals;
pub use refusals::{Refusal, Refusals, SuggestedGrant, SuggestionQuery};

mod token;
pub use token::{TaskToken, TokenQuery};

/// `POST /v1/tasks`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// Ignored (may be omitted) when the caller presents a token: the token names it.
    #[serde(default)]
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// When the task ends on its own; omitted: `ended_or_expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_when: Option<EndWhen>,
    /// `open`, `writes` or `restricted`; omitted: `writes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<FileMode>,
    /// From inside a task: create a child of the caller's task, within its grants
    /// (docs/identity.md). The parent is the caller's task, never named here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delegate: bool,
    /// An emergency task started by an approver, outside the policy's ceilings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlass>,
}

/// When a task ends, besides its TTL, `leash task end` and revocation (which end every
/// task).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndWhen {
    /// When its command exits (`leash run`): the first process attached is the command,
    /// the task ends when that process exits, whatever it left behind, and no other
    /// process may join.
    CommandExits,
    /// Only when ended, revoked or expired, whatever its processes do (`leash task
    /// create`, a session of many `leash run --task ID`).
    #[default]
    EndedOrExpired,
}

/// Grants in the grant syntax of docs/grants.md (also the format of `--grants FILE`, as YAML).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub exec: Vec<String>,
    #[serde(default)]
    pub connect: Vec<String>,
    /// `read:PATH` and `write:PATH` (enforced by `leash run`'s Landlock domain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Created, no process attached yet.
    Created,
    /// At least one process attached.
    Active,
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// The task's command exited (`end_when: command_exits`).
    Exited,
    /// The TTL passed.
    Expired,
    /// `leash task end` / `DELETE /v1/tasks/{id}`.
    Ended,
    /// Revoked by policy or the operator.
    Revoked,
    /// Its parent task ended, expired or was revoked (delegation).
    #[serde(rename = "parent_ended")]
    ParentEnded,
}

/// A task as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Printable id (16 lowercase hex digits of the kernel's u64).
    pub id: String,
    pub agent: String,
    /// `spiffe://<trust-domain>/agent/<agent>/task/<id>`.
    pub spiffe_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    pub mode: Mode,
    pub state: TaskState,
    /// When the task ends on its own.
    #[serde(default)]
    pub end_when: EndWhen,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; absent when the task has no TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    pub grants: Vec<Grant>,
    /// Processes attached through the API (their descendants are tagged too).
    #[serde(default)]
    pub attached_pids: Vec<u32>,
    /// The task's file rules; absent for a task from a daemon without them (`open`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileRules>,
    /// Who enforces the file rules and the self-protection scopes, and which rights
    /// this kernel's Landlock has.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file_enforcement: String,
    /// Addresses learned from the task's DNS answers (docs/dns.md), host grants until
    /// they expire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learned: Vec<LearnedAddress>,
    /// The task that delegated this one (docs/identity.md); absent for a root task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Every ancestor, the root task first and the parent last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// Present for a break-glass task: why, and which approver started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlassInfo>,
}

/// An address a DNS answer gave the task for a granted name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedAddress {
    pub name: String,
    pub address: String,
    /// `:PORTS[/PROTO]` of the name grant.
    pub ports: String,
    /// RFC 3339.
    pub expires_at: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantKind {
    Exec,
    Connect,
}

/// One grant of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `g1`, `g2`, ... unique within the task.
    pub id: String,
    pub kind: GrantKind,
    /// As given: a path or a connect spec.
    pub spec: String,
    /// RFC 3339; absent when the grant lives as long as the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// RFC 3339; present while the grant waits for approval (the kernel denies it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_until: Option<String>,
    /// What the kernel holds for it: files (`path major:minor:inode`) or networks
    /// (`addr/prefix`).
    #[serde(default)]
    pub resolved: Vec<String>,
    /// A child task's grant: the parent's grants it is within; revoking any of
    /// them revokes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived_from: Vec<String>,
}

/// `POST /v1/tasks/{id}/grants`: exactly one of `exec` and `connect` (`file` is
/// refused with `409`: a Landlock domain cannot be widened).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// Answer to `POST /v1/tasks/{id}/grants`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantAdded {
    pub grant_id: String,
    /// The grant waits for approval (`leash approve`) before the kernel allows it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// Answer to `POST /v1/tasks/{id}/attach`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub task: String,
    pub pid: u32,
}

/// Every error body: `{"error":{"code","message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `bad_grant`, `not_found`, `forbidden`,
    /// `caller_in_task`, `caller_gone`, `self_approval`, `conflict`,
    /// `payload_too_large`, `map_full`, `internal`.
    pub code: String,
    /// What was wrong and how to fix it.
    pub message: String,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub backend: String,
    pub backend_reason: String,
    /// Where the network hooks are attached (`root` or `task`), and why.
    #[serde(default)]
    pub attach_scope: String,
    #[serde(default)]
    pub attach_scope_reason: String,
    /// Who kills a tagged process moved out of its leash cgroups: `kernel` (at the
    /// move), or `daemon (<why not the kernel>)` when it reads the event.
    #[serde(default)]
    pub kill_at_move: String,
    pub cgroup: String,
    pub programs: Vec<ProgramStatus>,
    pub maps: Vec<MapStatus>,
    pub tasks_active: u64,
    pub events_lost: u64,
    pub tag_failures: u64,
    /// `kernel.bpf_stats_enabled`: program run time and counts are only kept when on.
    #[serde(default)]
    pub bpf_stats_enabled: bool,
    /// What each kind of action gets on this backend, e.g. "exec: EPERM (lsm)".
    #[serde(default)]
    pub guarantees: Vec<String>,
    /// The node policy in force, or that there is none.
    #[serde(default)]
    pub policy: String,
    /// Whether the kernel takes i386 system calls (`enabled`, `disabled`, `unknown`)
    /// and what that was told from; tagged callers of them are stopped either way.
    #[serde(default)]
    pub ia32_emulation: String,
    /// The Landlock ABI of the kernel and the rights `leash run` enforces with it.
    #[serde(default)]
    pub landlock: String,
    /// Set when the caller sees only part: a process inside a task sees its own task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStatus {
    pub name: String,
    pub attached: bool,
    /// Whether the program belongs to the chosen backend (false: the other backend's,
    /// not applicable). Absent from older daemons: applicable.
    #[serde(default = "applicable")]
    pub applies: bool,
}

const fn applicable() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapStatus {
    pub name: String,
    pub entries: u64,
    pub capacity: u64,
}

/// One line of `GET /v1/events` and of the audit log (README, "Using leash").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// RFC 3339 with nanoseconds.
    pub ts: String,
    pub task: String,
    pub agent: String,
    pub spiffe_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// The process; `null` where none is known: a `dns` event, decided by the
    /// responder, which sees a query's task (from the address the kernel rewrote it
    /// to) but not the process that sent it.
    #[serde(default)]
    pub pid: Option<u32>,
    pub comm: String,
    /// `exec|connect|send|socket|tamper|fork|dns|task_started|task_ended|grant_added|grant_revoked`.
    pub kind: String,
    /// `allowed|denied|audited`.
    pub verdict: String,
    pub target: serde_json::Value,
    pub reason: String,
    /// A child task's ancestors, the root task first (docs/identity.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}
