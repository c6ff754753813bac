//! The denial report of `leash run`: once the command exits, one line per distinct
//! refusal with the grant that would have allowed it, and a notice when the task's TTL
//! ran out during the run.
//!
//! `leash run` becomes the command (an exec in place, so the pid, signals and exit
//! status are the command's own). The report therefore comes from a reporter forked
//! before the task is joined: untagged and outside the task (a task's Landlock domain
//! keeps its processes from signalling or tracing it), and moved away from the command
//! by a double fork, so the command never sees a child it did not make. It learns the
//! task through a close-on-exec pipe (end of file at the exec) and waits for the
//! command's exit on a pidfd. It writes to the command's stderr, so whoever reads that
//! to its end gets the report too.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read as _, Write as _},
    os::fd::{AsFd as _, OwnedFd},
    time::Duration,
};

use leash::{
    client::{Client, EventItem},
    grants::remedy::{Remedy, remedy},
    protocol::{AuditEvent, EndReason, EventFilter, Task, TaskState},
};
use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::wait::waitpid,
    unistd::{ForkResult, fork},
};
use serde::{Deserialize, Serialize};

/// Lifecycle kinds, which refuse nothing.
const LIFECYCLE: [&str; 4] = ["task_started", "task_ended", "grant_added", "grant_revoked"];
/// How long the reporter waits for the daemon to see a created task end.
const END_WAIT: Duration = Duration::from_secs(3);
/// Between two reads of the events, to see the daemon's queue drained.
const SETTLE: Duration = Duration::from_millis(150);
/// Reads of the events at most, waiting for two that agree.
const SETTLE_ROUNDS: usize = 20;
/// Distinct refusals printed at most; the rest are counted.
const MAX_LINES: usize = 20;

/// What the reporter needs to know of the run.
#[derive(Debug, Serialize, Deserialize)]
struct RunInfo {
    task: String,
    agent: String,
    /// Created by this run (it ends with the command), not joined.
    created: bool,
    /// When the run joined the task (RFC 3339): a joined task's earlier events are not
    /// this run's.
    since: String,
}

/// The write end of the pipe to the reporter.
pub(crate) struct Reporter(std::fs::File);

impl Reporter {
    /// Forks the reporter. Call it while this process is single-threaded and not yet
    /// in any task.
    pub(crate) fn start(client: &Client) -> Result<Self, nix::Error> {
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let command = std::process::id();
        // SAFETY: `leash run` calls this before it starts a runtime or any thread, so
        // the child is a copy of a single-threaded process.
        match unsafe { fork() }? {
            ForkResult::Parent { child } => {
                drop(rx);
                // The middle process exits at once; reaped here so none is left behind.
                waitpid(child, None)?;
                Ok(Self(std::fs::File::from(tx)))
            }
            ForkResult::Child => {
                drop(tx);
                // Opened while `leash run` waits for us, so the pid is still its own.
                let pidfd = leash::daemon::lifetime::pidfd_open(command);
                // SAFETY: still single-threaded (a copy of the caller).
                if let (Ok(pidfd), Ok(ForkResult::Child)) = (pidfd, unsafe { fork() }) {
                    report_after(client, rx, &pidfd);
                }
                // SAFETY: _exit ends this copy without running the caller's exit handlers.
                unsafe { libc::_exit(0) }
            }
        }
    }

    /// Tells the reporter the task; it reports once the command (this process) exits.
    pub(crate) fn send(&mut self, task: &Task, created: bool, since: String) {
        let info = RunInfo {
            task: task.id.clone(),
            agent: task.agent.clone(),
            created,
            since,
        };
        if let Ok(line) = serde_json::to_vec(&info) {
            let _ = self.0.write_all(&line);
        }
    }
}

/// The reporter: reads the run's task, waits for the command to exit, prints.
fn report_after(client: &Client, rx: OwnedFd, command: &OwnedFd) {
    // Neither stdin nor stdout is the reporter's: a reader of the command's stdout
    // must see its end when the command exits.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
    let mut text = Vec::new();
    let _ = std::fs::File::from(rx).read_to_end(&mut text);
    let Ok(info) = serde_json::from_slice::<RunInfo>(&text) else {
        return; // `leash run` stopped before the task was joined: nothing to report.
    };
    let mut fds = [PollFd::new(command.as_fd(), PollFlags::POLLIN)];
    while let Err(nix::Error::EINTR) = poll(&mut fds, PollTimeout::NONE) {}
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    match runtime.block_on(gather(client, &info)) {
        Ok((task, denials)) => eprint!("{}", report_text(&info, &task, &denials)),
        Err(e) => eprintln!(
            "leash: no denial report for task {}: {e}; see leash events --task {}",
            info.task, info.task
        ),
    }
}

/// The task as it ended and its refusals in this run, once the daemon has seen them.
async fn gather(
    client: &Client,
    info: &RunInfo,
) -> Result<(Task, Vec<AuditEvent>), leash::client::ClientError> {
    let mut task = client.get_task(&info.task).await?;
    // A created task ends with the command; the daemon learns it from the kernel's exit
    // record, which comes after the command's own refusals.
    let deadline = tokio::time::Instant::now() + END_WAIT;
    while info.created && task.state != TaskState::Ended && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        task = client.get_task(&info.task).await?;
    }
    let filter = EventFilter {
        task: Some(info.task.clone()),
        since: (!info.created).then(|| info.since.clone()),
        ..EventFilter::default()
    };
    // Read until two reads agree: what other processes of the task did just before the
    // exit may still be on its way through the daemon.
    let mut last = refusals(client, &filter).await?;
    for _ in 0..SETTLE_ROUNDS {
        tokio::time::sleep(SETTLE).await;
        let now = refusals(client, &filter).await?;
        let settled = now.len() == last.len();
        last = now;
        if settled {
            break;
        }
    }
    Ok((client.get_task(&info.task).await.unwrap_or(task), last))
}

async fn refusals(
    client: &Client,
    filter: &EventFilter,
) -> Result<Vec<AuditEvent>, leash::client::ClientError> {
    let mut stream = client.events(filter).await?;
    let mut out = Vec::new();
    while let Some(item) = stream.next().await? {
        if let EventItem::Event(e) = item
            && e.verdict != "allowed"
            && !LIFECYCLE.contains(&e.kind.as_str())
        {
            out.push(*e);
        }
    }
    Ok(out)
}

/// The report: nothing when the run was refused nothing and its TTL held.
fn report_text(info: &RunInfo, task: &Task, events: &[AuditEvent]) -> String {
    let mut out = String::new();
    if task.end_reason == Some(EndReason::Expired) {
        let _ = writeln!(
            out,
            "leash: task {}'s TTL ran out during the run{}: what ran after it was denied (give it a longer --ttl)",
            info.task,
            task.ended_at
                .as_deref()
                .map(|t| format!(" at {t}"))
                .unwrap_or_default(),
        );
    }
    // One line per distinct refusal: what, why, and the grant.
    let mut distinct: BTreeMap<(String, String, String), (usize, Option<Remedy>)> = BTreeMap::new();
    for e in events {
        let what = format!("{} {}", e.kind, what_of(e));
        let entry = distinct
            .entry((e.verdict.clone(), what, e.reason.clone()))
            .or_insert((0, remedy(e)));
        entry.0 += 1;
    }
    if distinct.is_empty() {
        return out;
    }
    let audited = distinct.keys().all(|(v, _, _)| v == "audited");
    let _ = writeln!(
        out,
        "leash: task {} (agent {}) {} {} distinct action{} (leash events --task {}):",
        info.task,
        info.agent,
        if audited {
            "would have been refused"
        } else {
            "was refused"
        },
        distinct.len(),
        if distinct.len() == 1 { "" } else { "s" },
        info.task,
    );
    for ((verdict, what, reason), (count, fix)) in distinct.iter().take(MAX_LINES) {
        let times = if *count > 1 {
            format!(" ({count}×)")
        } else {
            String::new()
        };
        let fix = fix.as_ref().map_or_else(String::new, |r| fix_text(info, r));
        let _ = writeln!(out, "leash:   {verdict} {what} reason={reason}{times}{fix}");
    }
    if distinct.len() > MAX_LINES {
        let _ = writeln!(out, "leash:   ... and {} more", distinct.len() - MAX_LINES);
    }
    out
}

/// "; grant with: ..." in the form this run can use: flags for a new task, `leash grant
/// add` for a joined one.
fn fix_text(info: &RunInfo, r: &Remedy) -> String {
    match r {
        Remedy::Grant { list, spec } if !info.created => {
            list.grant_add(&info.task, spec).map_or_else(
                || format!("; grant with: {r} (in a new task)"),
                |c| format!("; grant with: {c}"),
            )
        }
        Remedy::Grant { .. } | Remedy::Name(_) => format!("; grant with: {r}"),
        Remedy::Other(what) => format!("; {what}"),
    }
}

/// The target in a few words: the file, address, name or family refused.
fn what_of(e: &AuditEvent) -> String {
    let t = &e.target;
    let s = |k: &str| t.get(k).and_then(serde_json::Value::as_str);
    if e.kind == "exec" {
        let path = s("path").unwrap_or("?");
        return match (s("role"), s("real")) {
            (Some("interpreter"), Some(real)) => format!("{real} (the interpreter of {path})"),
            (_, Some(real)) if real != path => format!("{path} (= {real})"),
            _ => path.to_owned(),
        };
    }
    super::events::target_summary(t)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn denial(kind: &str, reason: &str, target: serde_json::Value) -> AuditEvent {
        AuditEvent {
            ts: String::new(),
            task: "00ab".into(),
            agent: "cli".into(),
            spiffe_id: String::new(),
            intent: None,
            pid: Some(7),
            comm: "x".into(),
            kind: kind.into(),
            verdict: "denied".into(),
            target,
            reason: reason.into(),
        }
    }

    fn info(created: bool) -> RunInfo {
        RunInfo {
            task: "00ab".into(),
            agent: "cli".into(),
            created,
            since: String::new(),
        }
    }

    fn task(end: Option<EndReason>) -> Task {
        serde_json::from_value(json!({
            "id": "00ab", "agent": "cli", "spiffe_id": "", "mode": "enforce",
            "state": "ended", "end_when": "command_exits", "end_reason": end,
            "created_at": "", "grants": [], "attached_pids": []
        }))
        .unwrap()
    }

    #[test]
    fn one_line_per_distinct_refusal_with_its_grant() {
        let net = json!({"addr": "::ffff:127.0.0.1", "port": 9, "protocol": "tcp"});
        let interp = json!({"path": "/w/s.sh", "role": "interpreter", "real": "/usr/bin/env"});
        let events = [
            denial("connect", "not_granted", net.clone()),
            denial("connect", "not_granted", net),
            denial("exec", "interpreter_not_granted", interp),
        ];
        let text = report_text(&info(true), &task(Some(EndReason::Exited)), &events);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].contains("was refused 2 distinct actions"),
            "{text}"
        );
        assert!(
            lines[1]
                .ends_with("reason=not_granted (2×); grant with: --allow-connect 127.0.0.1:9/tcp"),
            "{text}"
        );
        assert!(
            lines[2].contains("exec /usr/bin/env (the interpreter of /w/s.sh)")
                && lines[2].ends_with("grant with: --allow-exec /usr/bin/env"),
            "{text}"
        );
        // A joined task is changed with `leash grant add`.
        let text = report_text(&info(false), &task(None), &events);
        assert!(
            text.contains("grant with: leash grant add 00ab --exec /usr/bin/env"),
            "{text}"
        );
        // Nothing refused, TTL held: silence.
        assert_eq!(
            report_text(&info(true), &task(Some(EndReason::Exited)), &[]),
            ""
        );
    }

    #[test]
    fn an_expired_ttl_is_said() {
        let text = report_text(&info(true), &task(Some(EndReason::Expired)), &[]);
        assert!(
            text.contains("TTL ran out during the run") && text.contains("--ttl"),
            "{text}"
        );
    }
}
