//! Filters of `GET /v1/tasks` and `GET /v1/events` (and the CLI flags that set them):
//! finding one task among hundreds of ended ones, or its denials among thousands of
//! events.

use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{AuditEvent, Task, TaskState};

/// Verdicts an event can carry, as `verdict=` accepts them.
/// `none`: lifecycle records, which decide nothing.
const VERDICTS: [&str; 4] = ["allowed", "denied", "audited", "none"];

/// A bad filter value: the API answers 400 with this text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error(
        "bad since {0:?}: expected an RFC 3339 time (2026-12-02T10:00:00Z) or a duration back from now (90s, 10m, 2h, 1d)"
    )]
    Since(String),
    #[error("bad verdict {0:?}: expected one of allowed, denied, audited, none")]
    Verdict(String),
    #[error("bad {0} 0: expected a positive number")]
    Zero(&'static str),
}

/// `GET /v1/tasks` query: newest first, then these.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TaskFilter {
    /// Only tasks of this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Only tasks not ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub active: bool,
    /// Only tasks created at or after this time (RFC 3339) or this long ago (`10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// At most this many (the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl TaskFilter {
    /// Whether a task of `agent` in `state` passes the agent and `active` filters.
    #[must_use]
    pub fn admits(&self, agent: &str, state: TaskState) -> bool {
        self.agent.as_deref().is_none_or(|a| agent == a)
            && (!self.active || state != TaskState::Ended)
    }

    /// The tasks that pass, newest first (by creation, then id), at most `limit`.
    pub fn apply(
        &self,
        mut tasks: Vec<Task>,
        now: OffsetDateTime,
    ) -> Result<Vec<Task>, FilterError> {
        let since = self.since.as_deref().map(|s| since(s, now)).transpose()?;
        if self.limit == Some(0) {
            return Err(FilterError::Zero("limit"));
        }
        tasks.retain(|t| {
            self.admits(&t.agent, t.state) && since.is_none_or(|s| at_or_after(&t.created_at, s))
        });
        tasks.sort_by(|a, b| {
            let created = |t: &Task| OffsetDateTime::parse(&t.created_at, &Rfc3339).ok();
            created(b).cmp(&created(a)).then_with(|| b.id.cmp(&a.id))
        });
        tasks.truncate(self.limit.unwrap_or(usize::MAX));
        Ok(tasks)
    }
}

/// `GET /v1/events` query.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Keep the stream open for new events. The backlog is sent first only when
    /// `since` or `tail` asks for it: following starts from now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `allowed`, `denied`, `audited` or `none` (lifecycle records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// Only events at or after this time (RFC 3339) or this long ago (`10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only the last N events of the backlog (after the other filters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<usize>,
}

/// An [`EventFilter`] with its values checked, ready to match events.
#[derive(Clone, Debug)]
pub struct EventMatch {
    task: Option<String>,
    agent: Option<String>,
    verdict: Option<String>,
    since: Option<OffsetDateTime>,
}

impl EventFilter {
    /// Checks the values (a bad one is an error naming it, never a silent match-all).
    pub fn compile(&self, now: OffsetDateTime) -> Result<EventMatch, FilterError> {
        if let Some(v) = &self.verdict
            && !VERDICTS.contains(&v.as_str())
        {
            return Err(FilterError::Verdict(v.clone()));
        }
        if self.tail == Some(0) {
            return Err(FilterError::Zero("tail"));
        }
        Ok(EventMatch {
            task: self.task.clone(),
            agent: self.agent.clone(),
            verdict: self.verdict.clone(),
            since: self.since.as_deref().map(|s| since(s, now)).transpose()?,
        })
    }

    /// Whether the backlog is sent: always without `follow`, else only when asked for.
    #[must_use]
    pub const fn wants_backlog(&self) -> bool {
        !self.follow || self.since.is_some() || self.tail.is_some()
    }
}

impl EventMatch {
    #[must_use]
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.task.as_ref().is_none_or(|t| &e.task == t)
            && self.agent.as_ref().is_none_or(|a| &e.agent == a)
            && self.verdict.as_ref().is_none_or(|v| &e.verdict == v)
            && self.since.is_none_or(|s| at_or_after(&e.ts, s))
    }
}

/// An RFC 3339 time, or a duration back from `now` (`90s`, `10m`, `2h`, `1d`).
fn since(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, FilterError> {
    let bad = || FilterError::Since(text.to_owned());
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let back = humantime::parse_duration(text).map_err(|_| bad())?;
    let back = time::Duration::try_from(back).map_err(|_| bad())?;
    now.checked_sub(back).ok_or_else(bad)
}

/// A record's RFC 3339 time is at or after `t`; an unreadable time passes (a filter
/// never hides what it cannot judge).
fn at_or_after(ts: &str, t: OffsetDateTime) -> bool {
    OffsetDateTime::parse(ts, &Rfc3339)
        .ok()
        .is_none_or(|x| x >= t)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-12-02 12:00:00 UTC);

    fn task(id: &str, agent: &str, state: &str, created: &str) -> Task {
        serde_json::from_value(serde_json::json!({
            "id": id, "agent": agent, "spiffe_id": "s", "mode": "enforce", "state": state,
            "created_at": created, "grants": [],
        }))
        .unwrap()
    }

    fn event(agent: &str, verdict: &str, ts: &str) -> AuditEvent {
        serde_json::from_value(serde_json::json!({
            "ts": ts, "task": "00000000000000aa", "agent": agent, "spiffe_id": "s",
            "comm": "c", "kind": "connect", "verdict": verdict, "target": {}, "reason": "r",
        }))
        .unwrap()
    }

    #[test]
    fn since_takes_times_and_durations_and_names_a_bad_value() {
        assert_eq!(since("10m", NOW), Ok(datetime!(2026-12-02 11:50:00 UTC)));
        assert_eq!(since("1d", NOW), Ok(datetime!(2026-12-01 12:00:00 UTC)));
        assert_eq!(
            since("2026-12-02T10:00:00Z", NOW),
            Ok(datetime!(2026-12-02 10:00:00 UTC))
        );
        for bad in ["", "yesterday", "10", "-5m", "2026-12-02"] {
            assert_eq!(
                since(bad, NOW),
                Err(FilterError::Since(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn tasks_newest_first_filtered_and_limited() {
        let tasks = vec![
            task("01", "a", "ended", "2026-12-02T09:00:00Z"),
            task("02", "b", "active", "2026-12-02T11:55:00Z"),
            task("03", "a", "created", "2026-12-02T11:58:00Z"),
            task("04", "a", "ended", "2026-12-02T11:59:00Z"),
        ];
        let ids = |f: TaskFilter| -> Vec<String> {
            f.apply(tasks.clone(), NOW)
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect()
        };
        assert_eq!(ids(TaskFilter::default()), ["04", "03", "02", "01"]);
        let agent_a = TaskFilter {
            agent: Some("a".into()),
            ..TaskFilter::default()
        };
        assert_eq!(ids(agent_a.clone()), ["04", "03", "01"]);
        let active = TaskFilter {
            active: true,
            ..agent_a
        };
        assert_eq!(ids(active), ["03"]);
        let recent = TaskFilter {
            since: Some("10m".into()),
            limit: Some(2),
            ..TaskFilter::default()
        };
        assert_eq!(ids(recent), ["04", "03"]);
        let zero = TaskFilter {
            limit: Some(0),
            ..TaskFilter::default()
        };
        assert_eq!(
            zero.apply(tasks.clone(), NOW).unwrap_err(),
            FilterError::Zero("limit")
        );
    }

    #[test]
    fn events_match_every_filter_and_bad_values_are_errors() {
        let f = EventFilter {
            agent: Some("a".into()),
            verdict: Some("denied".into()),
            since: Some("1h".into()),
            ..EventFilter::default()
        };
        let m = f.compile(NOW).unwrap();
        assert!(m.matches(&event("a", "denied", "2026-12-02T11:30:00.5Z")));
        assert!(!m.matches(&event("b", "denied", "2026-12-02T11:30:00Z")));
        assert!(!m.matches(&event("a", "allowed", "2026-12-02T11:30:00Z")));
        assert!(!m.matches(&event("a", "denied", "2026-12-02T10:30:00Z")));
        let bad = EventFilter {
            verdict: Some("deny".into()),
            ..EventFilter::default()
        };
        assert_eq!(
            bad.compile(NOW).unwrap_err(),
            FilterError::Verdict("deny".into())
        );
        assert!(EventFilter::default().wants_backlog());
        let follow = EventFilter {
            follow: true,
            ..EventFilter::default()
        };
        assert!(!follow.wants_backlog(), "following starts from now");
        assert!(
            EventFilter {
                tail: Some(5),
                ..follow
            }
            .wants_backlog()
        );
    }
}
