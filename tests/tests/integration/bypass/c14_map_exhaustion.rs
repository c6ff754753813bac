//! Class 14, map exhaustion: a fork bomb fills the process map; the fork that cannot be
//! tagged is refused (its caller killed before the child exists), so no untagged child
//! of a task ever runs.

use harness::{Action, Reason};
use harness::{Harness, spec};
use leash_common::maps::{PROCS, Stat};

/// Pids of the live processes of process group `pgid`.
fn group(pgid: i32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                // Fields after the command: state ppid pgrp ...
                s.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split(' ').nth(2)?.parse::<i32>().ok())
                    == Some(pgid)
            })
        })
        .collect()
}

/// Ends a flood's process group when the test is done, passed or failed.
struct Flood(i32);

impl Drop for Flood {
    fn drop(&mut self) {
        // SAFETY: ends the flood's own process group.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

#[test]
fn a_full_process_map_refuses_the_fork_and_no_child_escapes() {
    const CAPACITY: u32 = 64;
    let h = Harness::load_with(leash::kernel::AttachScope::Root, vec![(PROCS, CAPACITY)]);
    let task = h.task(spec(&[], &[]));
    let failures = h.stat(Stat::TagFailed);
    let mut flood = None;
    task.assert_denied(Action::Fork, Reason::MapFull, "signal 9", || {
        let report = task.probe(&format!("fork-fill {}", CAPACITY * 2));
        let (outcome, pgid) = report.split_once(" pgid ").unwrap_or_default();
        flood = pgid.parse().ok().map(Flood);
        outcome.to_owned()
    });
    assert!(h.stat(Stat::TagFailed) > failures, "tag failures counted");
    let pgid = flood.as_ref().expect("the flood's process group").0;
    let members = group(pgid);
    assert!(
        members.len() > 10,
        "the flood made children before the map filled: {members:?}"
    );
    let untagged: Vec<u32> = {
        let enf = h.enforcer.lock().unwrap();
        members
            .iter()
            .copied()
            .filter(|pid| enf.maps().tag_of(*pid) != Some(task.id))
            .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect()
    };
    assert!(
        untagged.is_empty(),
        "children running untagged: {untagged:?}"
    );
}

/// Live members of process group `pgid` (a zombie has left the process map already).
fn alive(pgid: i32) -> Vec<u32> {
    group(pgid)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, r)| !r.starts_with('Z'))
            })
        })
        .collect()
}

/// Several threads of one task fork at once while the process map fills: whichever wins
/// the last slots, no child runs untagged (a child whose tag cannot be entered is
/// killed before it runs, or its fork is refused). Many rounds, since the window is
/// the few instructions between a reservation's release and the child's entry.
#[test]
fn threads_racing_for_the_last_slot_leave_no_untagged_child() {
    const CAPACITY: u32 = 24;
    const THREADS: usize = 6;
    let rounds: usize = std::env::var("LEASH_FORK_RACE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    let h = Harness::load_with(leash::kernel::AttachScope::Root, vec![(PROCS, CAPACITY)]);
    let task = h.task(spec(&[], &[]));
    let (mut children, mut escaped) = (0, Vec::new());
    for round in 0..rounds {
        let report = task.probe(&format!("fork-race {THREADS}"));
        let (_, pgid) = report.split_once(" pgid ").unwrap_or_default();
        let flood = Flood(
            pgid.parse()
                .unwrap_or_else(|_| panic!("round {round}: {report}")),
        );
        let untagged = || {
            let enf = h.enforcer.lock().unwrap();
            alive(flood.0)
                .into_iter()
                .filter(|pid| enf.maps().tag_of(*pid) != Some(task.id))
                .collect::<Vec<u32>>()
        };
        children += alive(flood.0).len();
        // A child killed at its birth is gone within moments; an escaped one sleeps on.
        if !untagged().is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(300));
            escaped.extend(untagged().into_iter().map(|pid| (round, pid)));
        }
        drop(flood);
        harness::wait_for("the flood's entries to leave the process map", || {
            task.procs().is_empty()
        });
    }
    assert!(
        children > rounds,
        "the floods made children: {children} in {rounds} rounds"
    );
    assert!(
        escaped.is_empty(),
        "children running untagged (round, pid): {escaped:?}"
    );
}
