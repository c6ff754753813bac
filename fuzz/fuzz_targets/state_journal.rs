//! The daemon's state journal (`state_dir/tasks/<id>.jsonl`), recovered after damage:
//! records are saved through the real store, then the file is cut, has bytes
//! appended, or is replaced. Recovery never yields a state that was never written:
//! after a cut or an unfinished tail it yields the last record written in full, and
//! the next save is the next state read back.
//!
//! Input: a damage byte (0 none, 1 cut, 2 append, 3 replace), a 4-byte big-endian cut
//! offset, then the agent names of the records saved, one a line, and after a NUL the
//! bytes appended or written instead.
#![no_main]

use std::{io::Write as _, path::PathBuf, sync::OnceLock};

use leash::daemon::{registry::TaskRecord, store::Store};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

struct Input {
    /// One record per entry: an agent name and a grant counter.
    saves: Vec<(String, u32)>,
    damage: Damage,
}

#[derive(Debug)]
enum Damage {
    None,
    /// Truncated at this offset (modulo the length): a write the daemon died inside.
    Cut(u32),
    /// Bytes appended after the last line.
    Append(Vec<u8>),
    /// The whole file replaced.
    Replace(Vec<u8>),
}

const ID: u64 = 7;

fn record(agent: &str, next_grant: u32) -> TaskRecord {
    serde_json::from_value(json!({
        "id": ID, "agent": agent, "intent": null, "mode": "enforce", "state": "active",
        "end_reason": null, "created_at": "2026-11-29T00:00:00Z", "expires_ns": 0,
        "expires_at": null, "ended_at": null, "grants": [], "next_grant": next_grant,
        "attached_pids": [], "counter_slot": 1
    }))
    .expect("a valid record")
}

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::temp_dir().join(format!("leash-fuzz-journal-{}", std::process::id()))
    })
}

/// What a load found of the task.
#[derive(Debug, PartialEq)]
enum Loaded {
    Record(Value),
    Nothing,
    Error(String),
}

fn loaded(store: &Store) -> Loaded {
    match store.load() {
        Ok(tasks) => tasks.tasks.get(&ID).map_or(Loaded::Nothing, |r| {
            Loaded::Record(serde_json::to_value(r).unwrap())
        }),
        Err(e) => Loaded::Error(format!("{e:#}")),
    }
}

impl Input {
    fn parse(data: &[u8]) -> Option<Self> {
        let (&[kind, a, b, c, d], rest) = data.split_first_chunk::<5>()?;
        let (names, bytes) = match rest.iter().position(|&x| x == 0) {
            Some(i) => (&rest[..i], rest[i + 1..].to_vec()),
            None => (rest, Vec::new()),
        };
        let saves: Vec<(String, u32)> = std::str::from_utf8(names)
            .ok()?
            .split('\n')
            .enumerate()
            .map(|(i, n)| (n.to_owned(), i as u32))
            .collect();
        let damage = match kind % 4 {
            0 => Damage::None,
            1 => Damage::Cut(u32::from_be_bytes([a, b, c, d])),
            2 => Damage::Append(bytes),
            _ => Damage::Replace(bytes),
        };
        (saves.len() <= 16).then_some(Self { saves, damage })
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let _ = std::fs::remove_dir_all(dir());
    let store = Store::new(dir().clone());
    let file = dir()
        .join("tasks")
        .join(format!("{}.jsonl", leash::protocol::TaskId(ID)));
    let mut written: Vec<Value> = Vec::new();
    for (agent, n) in &input.saves {
        let r = record(agent, *n);
        store.save_task(&r).expect("save");
        written.push(serde_json::to_value(&r).unwrap());
    }
    let bytes = std::fs::read(&file).expect("the journal");
    // Where each record's line ends (compaction may have dropped earlier ones).
    let ends: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    let last = written.last().unwrap().clone();
    match &input.damage {
        Damage::None => assert_eq!(loaded(&store), Loaded::Record(last)),
        Damage::Cut(at) => {
            let at = *at as usize % (bytes.len() + 1);
            // A task's first line is written whole (temporary file, then rename).
            if at < ends[0] {
                return;
            }
            std::fs::write(&file, &bytes[..at]).unwrap();
            let complete = ends.iter().filter(|&&e| e <= at).count();
            // The lines still in the file are the last `ends.len()` records written.
            let expected = written[written.len() - ends.len() + complete - 1].clone();
            assert_eq!(
                loaded(&store),
                Loaded::Record(expected),
                "cut at {at} of {}",
                bytes.len()
            );
        }
        Damage::Append(tail) => {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .unwrap()
                .write_all(tail)
                .unwrap();
            let got = loaded(&store);
            if !tail.contains(&b'\n') {
                // An unfinished line is dropped, whatever it holds.
                assert_eq!(got, Loaded::Record(last), "tail {tail:?}");
            } else if let Loaded::Record(v) = &got {
                // Otherwise only a record that is in the file, as its last full line.
                let text = std::fs::read(&file).unwrap();
                let line = last_full_line(&bytes, tail);
                assert!(
                    serde_json::from_slice::<TaskRecord>(&line)
                        .is_ok_and(|r| serde_json::to_value(r).unwrap() == *v),
                    "recovered {v} from {:?}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
        Damage::Replace(all) => {
            std::fs::write(&file, all).unwrap();
            let got = loaded(&store);
            if !all.contains(&b'\n') {
                assert!(matches!(got, Loaded::Error(_)), "{all:?} gave {got:?}");
            }
        }
    }
    // Whatever was recovered, the next save is what the next load reads.
    if let Loaded::Record(_) = loaded(&store) {
        let next = record("next", 4_000_000_000);
        store.save_task(&next).expect("save after recovery");
        assert_eq!(
            loaded(&store),
            Loaded::Record(serde_json::to_value(&next).unwrap())
        );
    }
});

/// The last complete line of `journal` followed by `tail`.
fn last_full_line(journal: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut all = journal.to_vec();
    all.extend_from_slice(tail);
    let end = all.iter().rposition(|&b| b == b'\n').unwrap();
    let start = all[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    all[start..end].to_vec()
}
