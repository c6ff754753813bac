//! `leash events`: the audit events, as text or as the daemon's JSON lines.

use std::process::ExitCode;

use leash::{
    client::{Client, EventItem},
    protocol::{AuditEvent, EventFilter},
};

use super::output;

#[derive(Debug, clap::Args)]
pub(crate) struct EventsArgs {
    /// Keep the stream open and print new events as they happen (from now on, unless
    /// --since or --tail asks for earlier ones too).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the events of this task.
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,
    /// Only the events of this agent's tasks.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Only events with this verdict (`none`: lifecycle records).
    #[arg(long, value_parser = ["allowed", "denied", "audited", "none"])]
    pub verdict: Option<String>,
    /// Only events at or after this time: RFC 3339, or a duration back from now (10m, 2h).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only the last N of the earlier events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub tail: Option<u64>,
    /// Print the JSON lines as the daemon sends them (one object per line).
    #[arg(long)]
    pub json: bool,
}

impl EventsArgs {
    fn filter(&self) -> EventFilter {
        EventFilter {
            follow: self.follow,
            task: self.task.clone(),
            agent: self.agent.clone(),
            verdict: self.verdict.clone(),
            since: self.since.clone(),
            tail: self.tail.and_then(|n| usize::try_from(n).ok()),
        }
    }
}

pub(crate) fn run(client: &Client, args: &EventsArgs) -> anyhow::Result<ExitCode> {
    super::block_on(async {
        let mut stream = client.events(&args.filter()).await?;
        if args.json {
            while let Some(line) = stream.next_line().await? {
                output::print(&line)?;
            }
        } else {
            while let Some(item) = stream.next().await? {
                match item {
                    EventItem::Event(event) => output::print(&event_line(&event))?,
                    EventItem::Lagged(missed) => eprintln!(
                        "leash: warning: this stream fell behind and skipped {missed} events; \
                         the audit log has every event"
                    ),
                    EventItem::Other(line) => eprintln!("leash: note: {line}"),
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })?
}

/// `{ts} {verdict:8} {kind:8} task= agent= pid= comm= {target} reason=`.
pub(crate) fn event_line(e: &AuditEvent) -> String {
    let mut line = format!(
        "{} {:<8} {:<8} task={} agent={} id={} pid={} comm={}",
        e.ts,
        e.verdict,
        e.kind,
        output::word(&e.task),
        output::word(&e.agent),
        output::word(&e.spiffe_id),
        e.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        output::word(&e.comm),
    );
    let target = target_summary(&e.target);
    if !target.is_empty() {
        line.push(' ');
        line.push_str(&target);
    }
    line.push_str(" reason=");
    line.push_str(if e.reason.is_empty() { "-" } else { &e.reason });
    if let Some(intent) = &e.intent {
        line.push_str(" intent=");
        line.push_str(&output::word(intent));
    }
    // A delegated task's ancestors, root first.
    if !e.chain.is_empty() {
        line.push_str(" chain=");
        line.push_str(&output::word(&e.chain.join(">")));
    }
    line
}

/// The target as `key=value` fields: an object's members (nulls left out), anything else
/// as `target=...`. Nested values are shown as compact JSON.
pub(crate) fn target_summary(target: &serde_json::Value) -> String {
    use serde_json::Value;
    let value_text = |v: &Value| match v {
        Value::String(s) => output::word(s).into_owned(),
        other => output::word(&other.to_string()).into_owned(),
    };
    match target {
        Value::Null => String::new(),
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("target={}", value_text(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    #[test]
    fn parses_events() {
        let args = |words: &[&str]| match Cli::try_parse_from(
            ["leash", "events"].iter().chain(words).copied(),
        ) {
            Ok(Cli {
                command: Command::Events(a),
                ..
            }) => Ok(a.filter()),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(args(&[]).unwrap(), EventFilter::default());
        assert_eq!(
            args(&[
                "--follow",
                "--task",
                "00ab",
                "--json",
                "--agent",
                "a",
                "--verdict",
                "denied",
                "--since",
                "10m",
                "--tail",
                "5"
            ])
            .unwrap(),
            EventFilter {
                follow: true,
                task: Some("00ab".into()),
                agent: Some("a".into()),
                verdict: Some("denied".into()),
                since: Some("10m".into()),
                tail: Some(5),
            }
        );
        assert!(args(&["--verdict", "deny"]).is_err());
        assert!(args(&["--tail", "0"]).is_err());
    }

    #[test]
    fn formats_an_event_line() {
        let event: AuditEvent = serde_json::from_str(
            r#"{"ts":"2025-01-01T00:00:00.000000001Z","task":"00000000000000ab","agent":"cli",
                "spiffe_id":"spiffe://leash.local/agent/cli/task/00000000000000ab","pid":42,
                "comm":"my tool","kind":"exec","verdict":"denied",
                "target":{"path":"/usr/bin/curl","dev":"8:1","ino":1234,"extra":null},
                "reason":"not granted"}"#,
        )
        .unwrap();
        assert_eq!(
            event_line(&event),
            "2025-01-01T00:00:00.000000001Z denied   exec     task=00000000000000ab agent=cli \
             id=spiffe://leash.local/agent/cli/task/00000000000000ab \
             pid=42 comm=\"my tool\" path=/usr/bin/curl dev=8:1 ino=1234 reason=not granted"
        );
        let mut started = event.clone();
        started.kind = "task_started".into();
        started.verdict = "none".into();
        started.target = serde_json::Value::Null;
        started.reason = String::new();
        started.intent = Some("fix CI".into());
        assert_eq!(
            event_line(&started),
            "2025-01-01T00:00:00.000000001Z none     task_started task=00000000000000ab \
             agent=cli id=spiffe://leash.local/agent/cli/task/00000000000000ab \
             pid=42 comm=\"my tool\" reason=- intent=\"fix CI\""
        );
        started.chain = vec!["00000000000000aa".into(), "00000000000000ac".into()];
        assert!(
            event_line(&started).ends_with(" chain=00000000000000aa>00000000000000ac"),
            "{}",
            event_line(&started)
        );
        assert_eq!(target_summary(&serde_json::json!("x y")), "target=\"x y\"");
    }

    #[test]
    fn a_dns_event_has_no_pid() {
        let event: AuditEvent = serde_json::from_str(
            r#"{"ts":"2025-01-01T00:00:00.000000001Z","task":"00000000000000ab","agent":"cli",
                "spiffe_id":"spiffe://leash.local/agent/cli/task/00000000000000ab","pid":null,
                "comm":"","kind":"dns","verdict":"denied",
                "target":{"name":"x.test","type":"A","tcp":false},"reason":"not_granted"}"#,
        )
        .unwrap();
        assert_eq!(event.pid, None);
        assert!(
            event_line(&event).contains(" pid=- "),
            "{}",
            event_line(&event)
        );
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains("\"pid\":null"), "{json}");
    }
}
