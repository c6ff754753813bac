//! Profiles: named bundles of grants for common tools (`--profile NAME`, `leash
//! profile list|show`). The bundles are the YAML files of the repository's `profiles/`,
//! built in; a file `NAME.yaml` in the profiles directory (`$LEASH_PROFILES_DIR`, else
//! `/etc/leash/profiles`) replaces the built-in one of that name or adds a new one.
//!
//! A profile is a grants file (`exec:`, `connect:`, `files:` lists) with a
//! `description:`. It names each tool where the common distributions put it: the
//! entries whose file is not on this machine are left out of the task (nothing there
//! to run; a file created there later stays ungranted).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use leash::protocol::Grants;

use super::task::grants_file::parse_grants;

/// The built-in profiles, by name.
const BUILT_IN: &[(&str, &str)] = &[
    ("git", include_str!("../../../profiles/git.yaml")),
    (
        "glibc-base",
        include_str!("../../../profiles/glibc-base.yaml"),
    ),
    ("node", include_str!("../../../profiles/node.yaml")),
    ("pip", include_str!("../../../profiles/pip.yaml")),
    ("python3", include_str!("../../../profiles/python3.yaml")),
    (
        "shell-basics",
        include_str!("../../../profiles/shell-basics.yaml"),
    ),
];

/// The variable naming the directory of profiles that replace or add to the built-in.
pub(crate) const DIR_ENV: &str = "LEASH_PROFILES_DIR";
const DEFAULT_DIR: &str = "/etc/leash/profiles";

/// Where a profile came from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Source {
    BuiltIn,
    File(PathBuf),
}

#[derive(Debug)]
pub(crate) struct Profile {
    pub name: String,
    pub description: String,
    pub source: Source,
    pub grants: Grants,
}

fn dir() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The profile `name`: the profiles directory's file, else the built-in one.
pub(crate) fn load(name: &str) -> anyhow::Result<Profile> {
    load_from(&dir(), name)
}

fn load_from(dir: &Path, name: &str) -> anyhow::Result<Profile> {
    if !valid_name(name) {
        anyhow::bail!(
            "profile {name:?}: a profile name is lowercase letters, digits, - and _; `leash profile list` lists them"
        );
    }
    let file = dir.join(format!("{name}.yaml"));
    match std::fs::read_to_string(&file) {
        Ok(text) => return parse(name, &text, Source::File(file.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read profile {}", file.display())),
    }
    let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name) else {
        let known = names(dir).join(", ");
        anyhow::bail!("no profile {name}; the profiles are: {known}");
    };
    parse(name, text, Source::BuiltIn)
}

/// The names of every profile, built-in and in the directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = BUILT_IN.iter().map(|(n, _)| (*n).to_owned()).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        names.extend(entries.flatten().filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".yaml")?.to_owned();
            valid_name(&name).then_some(name)
        }));
    }
    names.sort();
    names.dedup();
    names
}

/// Every profile, by name.
pub(crate) fn all() -> anyhow::Result<Vec<Profile>> {
    let dir = dir();
    names(&dir).iter().map(|n| load_from(&dir, n)).collect()
}

/// A profile file: a grants file with a `description:`, and no file mode (a task's
/// file mode is its own choice, not a tool's).
fn parse(name: &str, text: &str, source: Source) -> anyhow::Result<Profile> {
    let whence = match &source {
        Source::BuiltIn => format!("built-in profile {name}"),
        Source::File(f) => format!("profile {name} ({})", f.display()),
    };
    let mut map: serde_yaml_ng::Mapping =
        serde_yaml_ng::from_str(text).with_context(|| format!("bad {whence}"))?;
    let description = match map.remove("description") {
        Some(serde_yaml_ng::Value::String(d)) if !d.trim().is_empty() => d,
        _ => anyhow::bail!("bad {whence}: it needs a `description:` saying what it is for"),
    };
    let rest = serde_yaml_ng::to_string(&map).with_context(|| format!("bad {whence}"))?;
    let file = parse_grants(&rest).with_context(|| format!("bad {whence}"))?;
    if let Some(mode) = file.file_mode {
        anyhow::bail!(
            "bad {whence}: `files: {mode}` is a file mode; a profile holds grants only (choose the mode with --files)"
        );
    }
    Ok(Profile {
        name: name.to_owned(),
        description,
        source,
        grants: file.grants,
    })
}

/// Whether the file an exec or file grant names is on this machine.
pub(crate) fn present(spec: &str) -> bool {
    let path = spec
        .strip_prefix("read:")
        .or_else(|| spec.strip_prefix("write:"))
        .unwrap_or(spec);
    Path::new(path).exists()
}

/// The profile's grants for this machine: the entries whose file is absent left out.
pub(crate) fn grants_here(p: &Profile) -> Grants {
    Grants {
        exec: p
            .grants
            .exec
            .iter()
            .filter(|s| present(s))
            .cloned()
            .collect(),
        connect: p.grants.connect.clone(),
        files: p
            .grants
            .files
            .iter()
            .filter(|s| present(s))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_profile_parses_and_says_what_it_is_for() {
        let none = Path::new("/nonexistent-profiles-dir");
        for (name, _) in BUILT_IN {
            let p = load_from(none, name).unwrap();
            assert_eq!(p.source, Source::BuiltIn);
            assert!(!p.description.is_empty(), "{name}");
            assert!(
                !p.grants.exec.is_empty() || !p.grants.connect.is_empty(),
                "{name} grants nothing"
            );
            for e in &p.grants.exec {
                assert!(e.starts_with('/'), "{name}: {e}");
            }
        }
        assert_eq!(names(none).len(), BUILT_IN.len());
    }

    #[test]
    fn a_file_in_the_directory_replaces_or_adds_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("leash-profiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("git.yaml"),
            "description: site git\nexec: [/opt/git/bin/git]\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("jq.yaml"),
            "description: jq\nexec: [/usr/bin/jq]\n",
        )
        .unwrap();
        std::fs::write(dir.join("bad.yaml"), "exec: [/usr/bin/jq]\n").unwrap();
        std::fs::write(
            dir.join("moded.yaml"),
            "description: x\nfiles: restricted\n",
        )
        .unwrap();
        let git = load_from(&dir, "git").unwrap();
        assert_eq!(git.grants.exec, ["/opt/git/bin/git"]);
        assert_eq!(git.source, Source::File(dir.join("git.yaml")));
        assert_eq!(load_from(&dir, "jq").unwrap().grants.exec, ["/usr/bin/jq"]);
        let e = format!("{:#}", load_from(&dir, "bad").unwrap_err());
        assert!(e.contains("description"), "{e}");
        let e = format!("{:#}", load_from(&dir, "moded").unwrap_err());
        assert!(e.contains("file mode"), "{e}");
        let e = format!("{:#}", load_from(&dir, "nope").unwrap_err());
        assert!(e.contains("no profile nope") && e.contains("jq"), "{e}");
        let e = format!("{:#}", load_from(&dir, "../etc/x").unwrap_err());
        assert!(e.contains("lowercase"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn absent_files_are_left_out_of_the_task() {
        let p = Profile {
            name: "t".into(),
            description: "t".into(),
            source: Source::BuiltIn,
            grants: Grants {
                exec: vec!["/nonexistent/tool".into(), "/".into()],
                connect: vec!["socket:netlink".into()],
                files: vec!["read:/nonexistent/data".into()],
            },
        };
        let g = grants_here(&p);
        assert_eq!(g.exec, ["/"]);
        assert_eq!(g.connect, ["socket:netlink"]);
        assert!(g.files.is_empty());
    }
}
