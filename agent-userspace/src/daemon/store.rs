//! The daemon's state on disk: one file per task (metadata and grants as resolved) and
//! one for the agents' counter slots. A change touches only the task it changed, so a
//! grant costs the same with ten tasks or ten thousand.
//!
//! A task's file is a journal: each change appends the whole record as one line, and
//! the last complete line is the state. An append to an existing file costs a few µs;
//! the write-a-temporary-then-rename it replaces allocated an inode and, on ext4,
//! started writeback of the new file (`auto_da_alloc`) on every grant: 0.1–0.5 ms,
//! most of the grant apply's tail. The journal is rewritten to its last line once it
//! grows past [`COMPACT_BYTES`].

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::{Tasks, registry::TaskRecord};

/// The state directory's task journals and agent slots.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store under `dir` (the config's `state_dir`); nothing is read yet.
    #[must_use]
    pub const fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn tasks_dir(&self) -> PathBuf {
        self.dir.join("tasks")
    }

    fn agents_file(&self) -> PathBuf {
        self.dir.join("agents.json")
    }

    /// Everything saved, or nothing on a first start.
    pub fn load(&self) -> anyhow::Result<Tasks> {
        let mut tasks = Tasks::default();
        match fs::read(self.agents_file()) {
            Ok(bytes) => {
                tasks.agents =
                    serde_json::from_slice(&bytes).with_context(|| corrupt(&self.agents_file()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read {}", self.agents_file().display()));
            }
        }
        let entries = match fs::read_dir(self.tasks_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(tasks),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot list {}", self.tasks_dir().display()));
            }
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        // A daemon before the journal wrote `<id>.json`; read those first so a journal
        // of the same task, written since, wins.
        paths.sort_by_key(|p| p.extension().is_some_and(|e| e == JOURNAL));
        for path in paths {
            let rec = match path.extension().and_then(|e| e.to_str()) {
                Some(LEGACY) => {
                    let bytes = fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let rec: TaskRecord =
                        serde_json::from_slice(&bytes).with_context(|| corrupt(&path))?;
                    // Carried over into a journal, so it is never read twice.
                    self.rewrite(&rec)?;
                    remove(&path)?;
                    rec
                }
                Some(JOURNAL) => self.load_journal(&path)?,
                _ => continue,
            };
            tasks.tasks.insert(rec.id, rec);
        }
        tasks.index_dns_slots();
        Ok(tasks)
    }

    /// The last complete line of a journal. A line cut short (the daemon died inside
    /// its write, so the change was never acknowledged) is dropped, and the journal
    /// rewritten so the next append starts on a line of its own.
    fn load_journal(&self, path: &Path) -> anyhow::Result<TaskRecord> {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let complete = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(&bytes[..0], |end| &bytes[..end]);
        let last = complete
            .rsplit(|&b| b == b'\n')
            .next()
            .filter(|l| !l.is_empty())
            .with_context(|| corrupt(path))?;
        let rec: TaskRecord = serde_json::from_slice(last).with_context(|| corrupt(path))?;
        if complete.len() + 1 != bytes.len() {
            tracing::warn!(path = %path.display(), "dropped an unfinished last line of a task's state");
            self.rewrite(&rec)?;
        }
        Ok(rec)
    }

    /// Appends the task's new state to its journal (creating it for a new task).
    pub fn save_task(&self, task: &TaskRecord) -> anyhow::Result<()> {
        let path = self.task_file(task.id, JOURNAL);
        let line = record_line(task)?;
        let mut f = match fs::OpenOptions::new().append(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.rewrite(task),
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        // One write of a whole line: a daemon killed inside it leaves the earlier
        // lines intact (see load_journal).
        f.write_all(&line)
            .with_context(|| format!("cannot append to {}", path.display()))?;
        let len = f.metadata().map_or(0, |m| m.len());
        drop(f);
        if len > COMPACT_BYTES {
            self.rewrite(task)?;
        }
        Ok(())
    }

    /// Replaces the task's journal with one line: its current state.
    fn rewrite(&self, task: &TaskRecord) -> anyhow::Result<()> {
        write_atomic(&self.task_file(task.id, JOURNAL), &record_line(task)?)
    }

    pub fn remove_task(&self, id: u64) -> anyhow::Result<()> {
        remove(&self.task_file(id, JOURNAL))?;
        remove(&self.task_file(id, LEGACY))
    }

    fn task_file(&self, id: u64, extension: &str) -> PathBuf {
        self.tasks_dir()
            .join(format!("{}.{extension}", crate::protocol::TaskId(id)))
    }

    pub(super) fn save_agents(&self, agents: &BTreeMap<String, u32>) -> anyhow::Result<()> {
        write_atomic(&self.agents_file(), &serde_json::to_vec(agents)?)
    }

    /// Removes every state file (`leash daemon --cleanup`).
    pub(super) fn clear(&self) {
        let _ = fs::remove_dir_all(self.tasks_dir());
        let _ = fs::remove_file(self.agents_file());
    }
}

/// A task's journal: one JSON record per line, the last one current.
const JOURNAL: &str = "jsonl";
/// A task's whole state in one JSON document (daemons before the journal).
const LEGACY: &str = "json";
/// A journal past this size is rewritten to its last line (about 60 changes of a task
/// with a few grants; a task's record rarely exceeds a few KiB).
const COMPACT_BYTES: u64 = 64 * 1024;

/// A record as one journal line.
fn record_line(task: &TaskRecord) -> anyhow::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(task)?;
    line.push(b'\n');
    Ok(line)
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn corrupt(path: &Path) -> String {
    format!(
        "the state file {} is corrupt; move it away to start without adopting that task",
        path.display()
    )
}

/// Write to a temporary file, then rename: a daemon crash leaves the old or the new
/// file. No fsync: the files only matter while the pinned maps they describe exist, and
/// those do not survive the power loss an fsync would guard against.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f =
        fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, next_grant: u32) -> TaskRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "agent": "a", "intent": null, "mode": "enforce", "state": "active",
            "end_reason": null, "created_at": "2026-11-29T00:00:00Z", "expires_ns": 0,
            "expires_at": null, "ended_at": null, "grants": [], "next_grant": next_grant,
            "attached_pids": [], "counter_slot": 1
        }))
        .unwrap()
    }

    fn store(tag: &str) -> Store {
        let dir = std::env::temp_dir().join(format!("leash-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Store::new(dir)
    }

    fn loaded(s: &Store, id: u64) -> u32 {
        s.load().unwrap().tasks[&id].next_grant
    }

    #[test]
    fn the_last_line_is_the_state() {
        let s = store("last");
        for n in 1..=3 {
            s.save_task(&record(7, n)).unwrap();
        }
        assert_eq!(loaded(&s, 7), 3);
        let text = fs::read_to_string(s.task_file(7, JOURNAL)).unwrap();
        assert_eq!(text.lines().count(), 3, "appended, not rewritten: {text}");
        s.remove_task(7).unwrap();
        assert!(s.load().unwrap().tasks.is_empty());
        let _ = fs::remove_dir_all(&s.dir);
    }

    #[test]
    fn a_cut_short_line_is_dropped_and_the_next_append_parses() {
        let s = store("torn");
        s.save_task(&record(7, 1)).unwrap();
        s.save_task(&record(7, 2)).unwrap();
        let path = s.task_file(7, JOURNAL);
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id":7,"agent":"a","#).unwrap();
        drop(f);
        assert_eq!(loaded(&s, 7), 2);
        s.save_task(&record(7, 3)).unwrap();
        assert_eq!(loaded(&s, 7), 3);
        let _ = fs::remove_dir_all(&s.dir);
    }

    #[test]
    fn a_broken_complete_line_is_an_error_naming_the_file() {
        let s = store("corrupt");
        s.save_task(&record(7, 1)).unwrap();
        let path = s.task_file(7, JOURNAL);
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{not json}\n").unwrap();
        drop(f);
        let err = format!("{:#}", s.load().err().unwrap());
        assert!(err.contains(&path.display().to_string()), "{err}");
        let _ = fs::remove_dir_all(&s.dir);
    }

    #[test]
    fn a_long_journal_is_compacted() {
        let s = store("compact");
        let line = serde_json::to_vec(&record(7, 0)).unwrap().len() as u64 + 1;
        let n = COMPACT_BYTES / line + 2;
        for i in 0..n {
            s.save_task(&record(7, i as u32)).unwrap();
        }
        let len = fs::metadata(s.task_file(7, JOURNAL)).unwrap().len();
        assert!(len < COMPACT_BYTES, "{len} bytes after {n} saves");
        assert_eq!(u64::from(loaded(&s, 7)), n - 1);
        let _ = fs::remove_dir_all(&s.dir);
    }

    #[test]
    fn a_state_file_of_an_older_daemon_is_carried_over() {
        let s = store("legacy");
        fs::create_dir_all(s.tasks_dir()).unwrap();
        fs::write(
            s.task_file(7, LEGACY),
            serde_json::to_vec(&record(7, 4)).unwrap(),
        )
        .unwrap();
        assert_eq!(loaded(&s, 7), 4);
        assert!(!s.task_file(7, LEGACY).exists());
        s.save_task(&record(7, 5)).unwrap();
        assert_eq!(loaded(&s, 7), 5);
        let _ = fs::remove_dir_all(&s.dir);
    }
}
