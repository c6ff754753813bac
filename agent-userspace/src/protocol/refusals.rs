//! `GET /v1/tasks/{id}/refusals`: what a task was refused (or, in audit mode, would
//! have been), one entry per distinct action, with the grant that allows it.

use serde::{Deserialize, Serialize};

/// One distinct refused action of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// `denied` or `audited`.
    pub verdict: String,
    /// The event kind: `exec`, `connect`, `send`, `socket`, `dns`, `file`, `tamper`, ...
    pub kind: String,
    /// The file, address, name or family, in a few words.
    pub what: String,
    pub reason: String,
    /// How many times.
    pub count: u64,
    /// The grant that allows it, when one can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<SuggestedGrant>,
    /// What to do instead, when no grant (or no exact one) can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The programs (`comm`) that did it, the first few.
    #[serde(default)]
    pub by: Vec<String>,
}

/// A grant, in the list it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SuggestedGrant {
    /// `exec`, `connect`, `read` or `write`.
    pub list: String,
    pub spec: String,
}

/// A task's refusals, in the order first seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    pub task: String,
    pub refusals: Vec<Refusal>,
    /// Refusals not kept once the task had as many distinct ones as the daemon holds
    /// (their events are in the audit log).
    #[serde(default)]
    pub dropped: u64,
    /// Asked with `?sync=true`, the daemon had recorded every decision the kernel had
    /// queued when the request came in. False from a daemon that could not (or does
    /// not know the parameter).
    #[serde(default)]
    pub synced: bool,
}

/// `GET /v1/tasks/{id}/suggestion?sync=true`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuggestionQuery {
    /// Drain the kernel's decision queue first (waits up to a few seconds).
    #[serde(default)]
    pub sync: bool,
}

impl Refusals {
    /// Every refusal counted, kept or dropped.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.refusals.iter().map(|r| r.count).sum::<u64>() + self.dropped
    }
}
