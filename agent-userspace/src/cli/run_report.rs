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
    fmt::Write as _,
    io::{Read as _, Write as _},
    os::fd::{AsFd as _, OwnedFd},
    time::Duration,
};

use leash::{
    client::Client,
    grants::remedy::GrantList,
    protocol::{EndReason, Refusal, Refusals, Task, TaskState},
};
use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::signal::{SigHandler, Signal, signal},
    sys::wait::waitpid,
    unistd::{ForkResult, fork},
};
use serde::{Deserialize, Serialize};

/// How long the reporter waits for the daemon to see a created task end.
const END_WAIT: Duration = Duration::from_secs(3);
/// Between two reads of the events, to see the daemon's queue drained.
const SETTLE: Duration = Duration::from_millis(150);
/// Reads of the events at most, waiting for two that agree.
const SETTLE_ROUNDS: usize = 20;
/// How long the reporter waits for the daemon in all.
const GIVE_UP: Duration = Duration::from_secs(20);
/// Distinct refusals printed at most; the rest are counted.
const MAX_LINES: usize = 20;

/// What the reporter needs to know of the run.
#[derive(Debug, Serialize, Deserialize)]
struct RunInfo {
    task: String,
    agent: String,
    /// Created by this run (it ends with the command), not joined.
    created: bool,
    /// A joined task's refusals before this run, which are not this run's.
    before: Refusals,
    /// `leash run --learn`: end with the flags that grant it all.
    learn: bool,
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

    /// Tells the reporter the task (and, for a joined one, what it was refused before
    /// this run); it reports once the command (this process) exits.
    pub(crate) fn send(&mut self, task: &Task, created: bool, before: Refusals, learn: bool) {
        let info = RunInfo {
            task: task.id.clone(),
            agent: task.agent.clone(),
            created,
            before,
            learn,
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
    // A Ctrl-C for the command reaches its whole process group, this one too: the
    // report of an interrupted run is still wanted.
    // SAFETY: SIG_IGN installs no handler code.
    unsafe {
        let _ = signal(Signal::SIGINT, SigHandler::SigIgn);
        let _ = signal(Signal::SIGQUIT, SigHandler::SigIgn);
    }
    let mut fds = [PollFd::new(command.as_fd(), PollFlags::POLLIN)];
    while let Err(nix::Error::EINTR) = poll(&mut fds, PollTimeout::NONE) {}
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    // Bounded: a caller reading the command's stderr to its end waits for this process.
    // Made inside the runtime: a timeout needs its timer.
    let gathered =
        runtime.block_on(async { tokio::time::timeout(GIVE_UP, gather(client, &info)).await });
    let text = match gathered {
        Ok(Ok((task, refusals))) => report_text(&info, &task, &refusals),
        Ok(Err(e)) => format!(
            "leash: no denial report for task {}: {e}; see leash events --task {}\n",
            info.task, info.task
        ),
        Err(_) => format!(
            "leash: no denial report for task {}: the daemon did not answer within {} s; see leash events --task {}\n",
            info.task,
            GIVE_UP.as_secs(),
            info.task
        ),
    };
    // Not eprint!, which panics when stderr's reader has gone.
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// The task as it ended and its refusals in this run, once the daemon has seen them.
async fn gather(
    client: &Client,
    info: &RunInfo,
) -> Result<(Task, Refusals), leash::client::ClientError> {
    let mut task = client.get_task(&info.task).await?;
    // A created task ends with the command; the daemon learns it from the kernel's exit
    // record, which comes after the command's own refusals.
    let deadline = tokio::time::Instant::now() + END_WAIT;
    while info.created && task.state != TaskState::Ended && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        task = client.get_task(&info.task).await?;
    }
    // Once the daemon has drained what the kernel had queued, every decision of the
    // command (which has exited) is recorded.
    let mut last = client.suggestion_synced(&info.task).await?;
    // A daemon that could not (or an older one): read until two reads agree.
    for _ in 0..if last.synced { 0 } else { SETTLE_ROUNDS } {
        tokio::time::sleep(SETTLE).await;
        let now = client.suggestion(&info.task).await?;
        let settled = now.total() == last.total();
        last = now;
        if settled {
            break;
        }
    }
    Ok((
        client.get_task(&info.task).await.unwrap_or(task),
        this_run(last, &info.before),
    ))
}

/// `now` less what the task had been refused `before` this run.
fn this_run(mut now: Refusals, before: &Refusals) -> Refusals {
    for r in &mut now.refusals {
        if let Some(b) = before.refusals.iter().find(|b| {
            b.what == r.what && b.reason == r.reason && b.kind == r.kind && b.verdict == r.verdict
        }) {
            r.count = r.count.saturating_sub(b.count);
        }
    }
    now.refusals.retain(|r| r.count > 0);
    now.dropped = now.dropped.saturating_sub(before.dropped);
    now
}

/// The report: nothing when the run was refused nothing and its TTL held.
fn report_text(info: &RunInfo, task: &Task, r: &Refusals) -> String {
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
    if r.refusals.is_empty() && r.dropped == 0 {
        if info.learn {
            let _ = writeln!(
                out,
                "leash: task {} needed no grant beyond its own",
                info.task
            );
        }
        return out;
    }
    let audited = r.refusals.iter().all(|r| r.verdict == "audited");
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
        r.refusals.len(),
        if r.refusals.len() == 1 { "" } else { "s" },
        info.task,
    );
    for refusal in r.refusals.iter().take(MAX_LINES) {
        let Refusal {
            verdict,
            kind,
            what,
            reason,
            count,
            ..
        } = refusal;
        let times = if *count > 1 {
            format!(" ({count}×)")
        } else {
            String::new()
        };
        let fix = fix_text(info, refusal);
        let _ = writeln!(
            out,
            "leash:   {verdict} {kind} {what} reason={reason}{times}{fix}"
        );
    }
    let more = r.refusals.len().saturating_sub(MAX_LINES) as u64 + r.dropped;
    if more > 0 {
        let _ = writeln!(out, "leash:   ... and {more} more");
    }
    if info.learn {
        let flags = super::suggest::flags_text(r);
        let line = flags.lines().last().unwrap_or_default();
        let _ = writeln!(
            out,
            "leash: to grant it all: {line}\nleash: (leash suggest --task {} --format yaml gives a grants file)",
            info.task
        );
    }
    out
}

/// "; grant with: ..." in the form this run can use: flags for a new task, `leash grant
/// add` for a joined one; or what to do where no grant can.
fn fix_text(info: &RunInfo, r: &Refusal) -> String {
    match (&r.grant, &r.note) {
        (Some(g), _) => {
            let Some(list) = GrantList::from_name(&g.list) else {
                return String::new();
            };
            if info.created {
                format!("; grant with: {} {}", list.run_flag(), g.spec)
            } else {
                list.grant_add(&info.task, &g.spec).map_or_else(
                    || {
                        format!(
                            "; grant with: {} {} (in a new task)",
                            list.run_flag(),
                            g.spec
                        )
                    },
                    |c| format!("; grant with: {c}"),
                )
            }
        }
        (None, Some(note)) => format!("; {note}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use leash::protocol::SuggestedGrant;
    use serde_json::json;

    use super::*;

    fn refusal(
        kind: &str,
        what: &str,
        reason: &str,
        count: u64,
        grant: Option<(&str, &str)>,
    ) -> Refusal {
        Refusal {
            verdict: "denied".into(),
            kind: kind.into(),
            what: what.into(),
            reason: reason.into(),
            count,
            grant: grant.map(|(list, spec)| SuggestedGrant {
                list: list.into(),
                spec: spec.into(),
            }),
            note: None,
            by: Vec::new(),
        }
    }

    fn info(created: bool, learn: bool) -> RunInfo {
        RunInfo {
            task: "00ab".into(),
            agent: "cli".into(),
            created,
            before: Refusals::default(),
            learn,
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

    fn sample() -> Refusals {
        Refusals {
            task: "00ab".into(),
            refusals: vec![
                refusal(
                    "connect",
                    "127.0.0.1:9/tcp",
                    "not_granted",
                    2,
                    Some(("connect", "127.0.0.1:9/tcp")),
                ),
                refusal(
                    "exec",
                    "/usr/bin/env (the interpreter of /w/s.sh)",
                    "interpreter_not_granted",
                    1,
                    Some(("exec", "/usr/bin/env")),
                ),
            ],
            dropped: 0,
            synced: true,
        }
    }

    #[test]
    fn one_line_per_distinct_refusal_with_its_grant() {
        let text = report_text(
            &info(true, false),
            &task(Some(EndReason::Exited)),
            &sample(),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].contains("was refused 2 distinct actions"),
            "{text}"
        );
        assert_eq!(
            lines[1],
            "leash:   denied connect 127.0.0.1:9/tcp reason=not_granted (2×); grant with: --allow-connect 127.0.0.1:9/tcp"
        );
        assert!(
            lines[2].ends_with("grant with: --allow-exec /usr/bin/env"),
            "{text}"
        );
        // A joined task is changed with `leash grant add`.
        let text = report_text(&info(false, false), &task(None), &sample());
        assert!(
            text.contains("grant with: leash grant add 00ab --exec /usr/bin/env"),
            "{text}"
        );
        // Learning ends with every flag.
        let text = report_text(&info(true, true), &task(None), &sample());
        assert!(
            text.contains(
                "to grant it all: --allow-exec /usr/bin/env --allow-connect 127.0.0.1:9/tcp"
            ),
            "{text}"
        );
        // Nothing refused, TTL held: silence.
        let none = Refusals::default();
        assert_eq!(
            report_text(&info(true, false), &task(Some(EndReason::Exited)), &none),
            ""
        );
    }

    #[test]
    fn a_joined_task_reports_this_run_only() {
        let mut before = sample();
        before.refusals[0].count = 1;
        before.refusals.truncate(1);
        let run = this_run(sample(), &before);
        assert_eq!(run.refusals.len(), 2);
        assert_eq!(run.refusals[0].count, 1);
        let run = this_run(sample(), &sample());
        assert!(run.refusals.is_empty());
    }

    #[test]
    fn an_expired_ttl_is_said() {
        let none = Refusals::default();
        let text = report_text(&info(true, false), &task(Some(EndReason::Expired)), &none);
        assert!(
            text.contains("TTL ran out during the run") && text.contains("--ttl"),
            "{text}"
        );
    }
}
