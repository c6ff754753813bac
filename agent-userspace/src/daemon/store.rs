//! The daemon's state on disk: one file per task (metadata and grants as resolved) and
//! one for the agents' counter slots. A change rewrites only the task it touched, so
//! a grant costs the same with ten tasks or ten thousand.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::{Tasks, registry::TaskRecord};

pub struct Store {
    dir: PathBuf,
}

impl Store {
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
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes =
                fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let rec: TaskRecord = serde_json::from_slice(&bytes).with_context(|| corrupt(&path))?;
            tasks.tasks.insert(rec.id, rec);
        }
        Ok(tasks)
    }

    pub fn save_task(&self, task: &TaskRecord) -> anyhow::Result<()> {
        write_atomic(
            &self.tasks_dir().join(format!("{}.json", task.id_string())),
            &serde_json::to_vec(task)?,
        )
    }

    pub fn remove_task(&self, id: u64) -> anyhow::Result<()> {
        let path = self
            .tasks_dir()
            .join(format!("{}.json", super::registry::task_id_string(id)));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    pub fn save_agents(&self, agents: &BTreeMap<String, u32>) -> anyhow::Result<()> {
        write_atomic(&self.agents_file(), &serde_json::to_vec(agents)?)
    }

    /// Removes every state file (`leash daemon --cleanup`).
    pub fn clear(&self) {
        let _ = fs::remove_dir_all(self.tasks_dir());
        let _ = fs::remove_file(self.agents_file());
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
    let tmp = path.with_extension("json.tmp");
    let mut f =
        fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}
