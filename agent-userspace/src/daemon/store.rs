//! The state file: task metadata and grants as resolved, written atomically.

use std::{fs, io::Write as _, path::PathBuf};

use anyhow::Context as _;

use super::Tasks;

pub struct Store {
    path: PathBuf,
}

impl Store {
    pub const fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The saved tasks, or none on a first start.
    pub fn load(&self) -> anyhow::Result<Tasks> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the state file {} is corrupt; move it away to start without adopting tasks",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tasks::default()),
            Err(e) => Err(e)
                .with_context(|| format!("cannot read the state file {}", self.path.display())),
        }
    }

    /// Write to a temporary file, then rename: a daemon crash leaves the old or the new
    /// file. No fsync: the file only matters while the pinned maps it describes exist,
    /// and those do not survive the power loss an fsync would guard against. (It cost
    /// ~2 ms per grant.)
    pub fn save(&self, tasks: &Tasks) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(tasks)?;
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&bytes)?;
        drop(f);
        fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot replace {}", self.path.display()))?;
        Ok(())
    }
}
