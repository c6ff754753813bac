//! Whether a file mode or file grant is within a parent's: the file rules of
//! delegation (docs/identity.md).

use super::FileGrant;
use crate::protocol::FileMode;

/// How much a file mode limits: a child's mode limits at least as much as its parent's.
#[must_use]
pub const fn mode_within(child: FileMode, parent: FileMode) -> bool {
    const fn rank(m: FileMode) -> u8 {
        match m {
            FileMode::Open => 0,
            FileMode::Writes => 1,
            FileMode::Restricted => 2,
        }
    }
    rank(child) >= rank(parent)
}

/// Whether a file grant is within one of `parents`: its path in the hierarchy of a
/// parent grant, and a `write:` only under a parent `write:` (a `write:` covers reads).
/// `Err` names why a path cannot be compared: it is not normalized (as a policy
/// ceiling's paths must be), so that `..` cannot climb out of a parent's hierarchy.
pub fn file_within(child: &FileGrant, parents: &[FileGrant]) -> Result<bool, String> {
    crate::policy::normalized_path(&child.path)?;
    Ok(parents
        .iter()
        .any(|p| (p.write || !child.write) && in_tree(&child.path, &p.path)))
}

/// `path` is `root` or beneath it, component by component.
fn in_tree(path: &str, root: &str) -> bool {
    let (path, root) = (trim_slash(path), trim_slash(root));
    root.is_empty()
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn trim_slash(p: &str) -> &str {
    p.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_modes_and_grants() {
        use FileMode::{Open, Restricted, Writes};
        assert!(mode_within(Restricted, Writes) && mode_within(Writes, Writes));
        assert!(mode_within(Writes, Open));
        assert!(!mode_within(Writes, Restricted) && !mode_within(Open, Writes));

        let g = |s: &str| crate::files::parse_grant(s).unwrap();
        let parents = [g("read:/srv/data"), g("write:/srv/out/")];
        assert!(file_within(&g("read:/srv/data"), &parents).unwrap());
        assert!(file_within(&g("read:/srv/data/x/y"), &parents).unwrap());
        assert!(
            file_within(&g("read:/srv/out/a"), &parents).unwrap(),
            "write reads"
        );
        assert!(file_within(&g("write:/srv/out/a"), &parents).unwrap());
        assert!(!file_within(&g("write:/srv/data/x"), &parents).unwrap());
        assert!(!file_within(&g("read:/srv/database"), &parents).unwrap());
        assert!(!file_within(&g("read:/srv"), &parents).unwrap());
        assert!(file_within(&g("read:/srv/data/../../etc"), &parents).is_err());
        assert!(file_within(&g("read:/srv//data"), &parents).is_err());
        assert!(file_within(&g("read:/etc"), &[g("write:/")]).unwrap());
    }
}
