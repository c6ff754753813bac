//! File modes and the file rules of a task (docs/grants.md, "files").

use serde::{Deserialize, Serialize};

/// What a task's processes started by `leash run` may do with files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileMode {
    /// No file rules (only the self-protection scopes).
    Open,
    /// Reads are open; writes go only to the `write:` grants and the base writable set
    /// (the workspace, the task's tmp directory, `/dev/null`, ...). The default.
    #[default]
    Writes,
    /// Reads too are limited, to the base read set and the `read:` grants.
    Restricted,
}

impl FileMode {
    /// The name the API, the CLI and the docs use.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Writes => "writes",
            Self::Restricted => "restricted",
        }
    }
}

impl std::fmt::Display for FileMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task's file rules as the daemon fixed them when the task was created: its mode, its
/// grants and the daemon config's base sets (`files:`). `leash run` builds its Landlock
/// domain from them, adding the workspace and the task's tmp directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRules {
    pub mode: FileMode,
    /// `read:` grants (absolute paths; a directory grants its hierarchy).
    #[serde(default)]
    pub read: Vec<String>,
    /// `write:` grants (write implies read).
    #[serde(default)]
    pub write: Vec<String>,
    /// Readable in `restricted` mode (the config's `files.read`).
    #[serde(default)]
    pub base_read: Vec<String>,
    /// Always writable (the config's `files.write`), besides workspace and tmp directory.
    #[serde(default)]
    pub base_write: Vec<String>,
    /// Left out of every allowed hierarchy (the config's `files.exclude`; `*` may stand
    /// in the last component).
    #[serde(default)]
    pub exclude: Vec<String>,
}
