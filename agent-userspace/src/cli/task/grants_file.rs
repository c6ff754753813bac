//! `--grants FILE`: the task YAML of `leash run` and `leash task create`
//! (docs/grants.md). Its `files:` holds the file grants and, optionally, the file mode:
//!
//! ```yaml
//! files: restricted          # the mode alone
//! files:                     # or a list: at most one mode, and read:/write: grants
//!   - restricted
//!   - read:/srv/data
//!   - write:/srv/out
//! ```
//!
//! Every entry is checked here, so a typo is an error naming the file and the entry
//! before any request is sent.

use std::path::Path;

use anyhow::Context as _;
use leash::protocol::{FileMode, Grants};
use serde::Deserialize;

/// What a grants file asks for: the grant lists, and the file mode when it names one.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct GrantsFile {
    pub grants: Grants,
    pub file_mode: Option<FileMode>,
}

/// The file as written: `files:` may be one string or a list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    exec: Vec<String>,
    #[serde(default)]
    connect: Vec<String>,
    #[serde(default)]
    files: Option<FilesEntry>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FilesEntry {
    One(String),
    List(Vec<String>),
}

/// Why a `files:` entry is refused (the loader adds the file's name).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilesError {
    #[error(
        "files: {entry:?} is neither a file mode (open, writes or restricted) nor a file grant"
    )]
    Entry {
        entry: String,
        #[source]
        source: leash::grants::GrantError,
    },
    #[error("files: names two file modes, {first} and {second}; keep one")]
    TwoModes { first: FileMode, second: FileMode },
    #[error(
        "`files:` must be a file mode (open, writes, restricted) or a list of read:PATH / write:PATH entries"
    )]
    Shape,
}

fn mode_named(s: &str) -> Option<FileMode> {
    [FileMode::Open, FileMode::Writes, FileMode::Restricted]
        .into_iter()
        .find(|m| m.as_str() == s)
}

/// Splits the `files:` entries into the mode (at most one) and the file grants,
/// each grant checked as the daemon checks it.
fn split_files(entries: Vec<String>) -> Result<(Option<FileMode>, Vec<String>), FilesError> {
    let mut mode = None;
    let mut grants = Vec::new();
    for entry in entries {
        if let Some(m) = mode_named(entry.trim()) {
            if let Some(first) = mode.replace(m) {
                return Err(FilesError::TwoModes { first, second: m });
            }
            continue;
        }
        leash::files::parse_grant(&entry).map_err(|source| FilesError::Entry {
            entry: entry.clone(),
            source,
        })?;
        grants.push(entry);
    }
    Ok((mode, grants))
}

pub(crate) fn read_grants_file(file: &Path) -> anyhow::Result<GrantsFile> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read --grants file {}", file.display()))?;
    parse_grants(&text).with_context(|| format!("bad --grants file {}", file.display()))
}

pub(crate) fn parse_grants(text: &str) -> anyhow::Result<GrantsFile> {
    if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    }) {
        return Ok(GrantsFile::default());
    }
    // A key with nothing under it (`connect:`) is YAML null: read it as an empty list.
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)?;
    let value = match value {
        serde_yaml_ng::Value::Mapping(mut map) => {
            for (_, v) in &mut map {
                if v.is_null() {
                    *v = serde_yaml_ng::Value::Sequence(Vec::new());
                }
            }
            serde_yaml_ng::Value::Mapping(map)
        }
        other => other,
    };
    // `files:` alone is checked first, so a wrong shape gets its own message rather
    // than serde's "did not match any variant".
    if let serde_yaml_ng::Value::Mapping(map) = &value
        && let Some(files) = map.get("files")
        && serde_yaml_ng::from_value::<FilesEntry>(files.clone()).is_err()
    {
        return Err(FilesError::Shape.into());
    }
    let raw: Raw = serde_yaml_ng::from_value(value)?;
    let entries = match raw.files {
        None => Vec::new(),
        Some(FilesEntry::One(s)) => vec![s],
        Some(FilesEntry::List(list)) => list,
    };
    let (file_mode, files) = split_files(entries)?;
    Ok(GrantsFile {
        grants: Grants {
            exec: raw.exec,
            connect: raw.connect,
            files,
        },
        file_mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", parse_grants(text).unwrap_err())
    }

    #[test]
    fn files_mode_alone_or_in_the_list() {
        let g = parse_grants("files: restricted\n").unwrap();
        assert_eq!(g.file_mode, Some(FileMode::Restricted));
        assert!(g.grants.files.is_empty());

        let g = parse_grants(
            "exec: [/bin/ls]\nfiles:\n  - read:/srv/data\n  - open\n  - write:/srv/out\n",
        )
        .unwrap();
        assert_eq!(g.file_mode, Some(FileMode::Open));
        assert_eq!(g.grants.files, ["read:/srv/data", "write:/srv/out"]);
        assert_eq!(g.grants.exec, ["/bin/ls"]);

        let g = parse_grants("files:\n  - write:/srv/out\n").unwrap();
        assert_eq!(g.file_mode, None);
        assert_eq!(g.grants.files, ["write:/srv/out"]);

        // One grant written as a plain string is a list of one.
        let g = parse_grants("files: read:/srv/data\n").unwrap();
        assert_eq!(
            (g.file_mode, g.grants.files),
            (None, vec!["read:/srv/data".into()])
        );
        assert_eq!(parse_grants("files:\n").unwrap(), GrantsFile::default());
    }

    #[test]
    fn bad_files_entries_are_named() {
        let e = err("files: strict\n");
        assert!(e.contains("\"strict\"") && e.contains("restricted"), "{e}");
        let e = err("files:\n  - read:/ok\n  - read:relative/path\n");
        assert!(
            e.contains("\"read:relative/path\"") && e.contains("absolute"),
            "{e}"
        );
        let e = err("files: [exec:/bin/ls]\n");
        assert!(
            e.contains("\"exec:/bin/ls\"") && e.contains("read: or write:"),
            "{e}"
        );
        let e = err("files: [restricted, writes]\n");
        assert!(e.contains("two file modes, restricted and writes"), "{e}");
        let e = err("files: {mode: restricted}\n");
        assert!(e.contains("`files:` must be a file mode"), "{e}");
        let e = err("files: [[read:/x]]\n");
        assert!(e.contains("`files:` must be a file mode"), "{e}");
    }
}
