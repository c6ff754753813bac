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
