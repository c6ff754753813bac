//! Leaving paths out of an allowed hierarchy. Landlock only allows, so a hierarchy with
//! an excluded path inside is replaced by its children, recursively along the excluded
//! path: every sibling on the way is allowed whole, the excluded entry is left out.
//!
//! Entries are listed when the domain is built. One added later beside an excluded path
//! is not allowed (fail closed). Symbolic links met on the way are skipped, so a link
//! cannot bring its target in: Landlock checks the file a path resolves to, and that
//! file is allowed only where its own hierarchy is.

use std::{
    io,
    path::{Path, PathBuf},
};

/// One `exclude` entry: a directory and a name in it, where `*` matches any run of
/// characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Exclusion {
    parent: PathBuf,
    pattern: String,
}

impl Exclusion {
    /// `/etc/ssh/ssh_host_*_key`: the parent canonicalized (so links above it match the
    /// paths they lead to); `None` for `/` or a parent that does not exist.
    pub(super) fn new(path: &str) -> Option<Self> {
        let path = Path::new(path);
        let parent = std::fs::canonicalize(path.parent()?).ok()?;
        let pattern = path.file_name()?.to_string_lossy().into_owned();
        Some(Self { parent, pattern })
    }

    fn matches(&self, path: &Path) -> bool {
        path.parent() == Some(self.parent.as_path())
            && path
                .file_name()
                .is_some_and(|n| glob(&self.pattern, &n.to_string_lossy()))
    }
}

/// `*` matches any run of characters, everything else itself.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The paths that allow `root`'s hierarchy without the excluded entries: `root` itself
/// when nothing excluded is inside it, else its children, recursively. `root` is
/// canonical.
pub(super) fn expand(root: &Path, excluded: &[Exclusion]) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(root, excluded, &mut out)?;
    Ok(out)
}

fn walk(path: &Path, excluded: &[Exclusion], out: &mut Vec<PathBuf>) -> io::Result<()> {
    if excluded.iter().any(|e| e.matches(path)) {
        return Ok(());
    }
    if !excluded.iter().any(|e| e.parent.starts_with(path)) {
        out.push(path.to_owned());
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_symlink() {
            continue;
        }
        walk(&entry.path(), excluded, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("ssh_host_*_key", "ssh_host_ed25519_key"));
        assert!(!glob("ssh_host_*_key", "ssh_host_ed25519_key.pub"));
        assert!(glob("shadow", "shadow"));
        assert!(!glob("shadow", "shadow-"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXc"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn siblings_along_the_excluded_path() {
        let dir = std::env::temp_dir().join(format!("leash-exclude-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::create_dir_all(dir.join("c")).unwrap();
        for f in ["a/b/secret", "a/b/keep", "a/other", "top"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        std::os::unix::fs::symlink("/etc", dir.join("a/link")).unwrap();
        let root = std::fs::canonicalize(&dir).unwrap();
        let ex = [Exclusion::new(&format!("{}/a/b/secret", root.display())).unwrap()];
        let mut got = expand(&root, &ex).unwrap();
        got.sort();
        let want: Vec<PathBuf> = ["a/b/keep", "a/other", "c", "top"]
            .iter()
            .map(|p| root.join(p))
            .collect();
        assert_eq!(got, want);
        // Nothing excluded inside: the hierarchy whole.
        assert_eq!(expand(&root.join("c"), &ex).unwrap(), [root.join("c")]);
        // The root itself excluded: nothing.
        let ex = [Exclusion::new(&format!("{}/c", root.display())).unwrap()];
        assert!(expand(&root.join("c"), &ex).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
