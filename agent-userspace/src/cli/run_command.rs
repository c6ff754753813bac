//! What `leash run` checks of its command before it joins the task: where it is (`$PATH`,
//! a path made absolute and clean, as the kernel will compare it), and whether it and a
//! `#!` interpreter are among the task's exec grants.

use std::{
    ffi::OsStr,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Component, Path, PathBuf},
};

use leash::protocol::{GrantKind, Task};

/// Exit status when the command cannot be found (as in shells).
pub(super) const EXIT_NOT_FOUND: u8 = 127;
/// Exit status when the command was found but could not be executed.
pub(super) const EXIT_CANNOT_EXEC: u8 = 126;

/// The `#!` interpreter of `cmd` when the task's exec grants do not cover it: the
/// kernel checks it by inode, and stops the command if it is not granted.
pub(super) fn ungranted_interpreter(cmd: &Path, task: &Task) -> Option<PathBuf> {
    leash::grants::exec_role::interpreter_of(cmd).filter(|i| !is_granted(i, task))
}

/// `path` as the kernel will compare it with a script grant: no `.` components or
/// repeated slashes (as [`Path::components`] reads them), and a `..` resolved through
/// the real path of the parent directory. `/w/./s.sh` would not match a grant of
/// `/w/s.sh`, though it names the same file.
fn clean(path: &Path) -> PathBuf {
    let out: PathBuf = path.components().collect();
    if out.components().any(|c| c == Component::ParentDir)
        && let (Some(parent), Some(name)) = (out.parent(), out.file_name())
        && let Ok(real) = std::fs::canonicalize(parent)
    {
        return real.join(name);
    }
    out
}

/// Whether `cmd` is covered by one of the task's exec grants: the same file, a file
/// directly inside a granted `DIR/`, or any file below a granted `DIR/**`. Paths are
/// compared canonicalized.
pub(super) fn is_granted(cmd: &Path, task: &Task) -> bool {
    let cmd = std::fs::canonicalize(cmd).unwrap_or_else(|_| cmd.to_owned());
    task.grants
        .iter()
        .filter(|g| g.kind == GrantKind::Exec)
        .any(|g| {
            if let Some(dir) = g.spec.strip_suffix("/**") {
                let dir = Path::new(dir);
                let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
                return cmd.starts_with(dir);
            }
            let spec = Path::new(&g.spec);
            let canonical = std::fs::canonicalize(spec).unwrap_or_else(|_| spec.to_owned());
            if g.spec.ends_with('/') {
                cmd.parent() == Some(canonical.as_path())
            } else {
                cmd == canonical
            }
        })
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error("command not found: {0}")]
    NotFound(String),
    #[error("cannot run {0}: it is not an executable file")]
    NotExecutable(String),
}

impl ResolveError {
    pub(super) fn exit_code(&self) -> u8 {
        match self {
            Self::NotFound(_) => EXIT_NOT_FOUND,
            Self::NotExecutable(_) => EXIT_CANNOT_EXEC,
        }
    }
}

/// The absolute path of `cmd`: as given (made absolute) when it contains a `/`, else the
/// first executable regular file named `cmd` in `path_var` (an empty entry is the
/// current directory, as in POSIX shells).
pub(crate) fn resolve_command(
    cmd: &OsStr,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, ResolveError> {
    let shown = cmd.to_string_lossy().into_owned();
    let cwd = || std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    if cmd.is_empty() {
        return Err(ResolveError::NotFound(shown));
    }
    if cmd.as_bytes().contains(&b'/') {
        let path = clean(&cwd().join(cmd));
        return match std::fs::metadata(&path) {
            Ok(meta) if is_executable(&meta) => Ok(path),
            Ok(_) => Err(ResolveError::NotExecutable(shown)),
            Err(_) => Err(ResolveError::NotFound(shown)),
        };
    }
    let mut non_executable = false;
    for dir in std::env::split_paths(path_var.unwrap_or(OsStr::new("/usr/bin:/bin"))) {
        let dir = if dir.as_os_str().is_empty() {
            cwd()
        } else {
            cwd().join(dir)
        };
        let candidate = clean(&dir.join(cmd));
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if is_executable(&meta) {
                return Ok(candidate);
            }
            non_executable |= meta.is_file();
        }
    }
    Err(if non_executable {
        ResolveError::NotExecutable(shown)
    } else {
        ResolveError::NotFound(shown)
    })
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

#[cfg(test)]
mod tests {
    use leash::protocol::{EndWhen, Grant, Mode, TaskState};

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("leash-run-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_file(path: &Path, mode: u32) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn resolves_commands_on_path() {
        let dir = temp_dir("path");
        let a = dir.join("a");
        let b = dir.join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        write_file(&a.join("tool"), 0o644); // not executable: skipped
        write_file(&b.join("tool"), 0o755);
        write_file(&a.join("plain"), 0o644);
        std::fs::create_dir_all(b.join("subdir")).unwrap();
        let path_var = std::env::join_paths([&a, &b]).unwrap();

        assert_eq!(
            resolve_command(OsStr::new("tool"), Some(&path_var)).unwrap(),
            b.join("tool")
        );
        let err = resolve_command(OsStr::new("nope"), Some(&path_var)).unwrap_err();
        assert_eq!(err.to_string(), "command not found: nope");
        assert_eq!(err.exit_code(), 127);
        let err = resolve_command(OsStr::new("plain"), Some(&path_var)).unwrap_err();
        assert_eq!(err.exit_code(), 126);
        assert!(matches!(
            resolve_command(OsStr::new("subdir"), Some(&path_var)),
            Err(ResolveError::NotFound(_))
        ));

        // With a slash: taken as is, never searched.
        let direct = b.join("tool");
        assert_eq!(
            resolve_command(direct.as_os_str(), Some(OsStr::new(""))).unwrap(),
            direct
        );
        assert!(matches!(
            resolve_command(a.join("tool").as_os_str(), None),
            Err(ResolveError::NotExecutable(_))
        ));
        assert!(matches!(
            resolve_command(OsStr::new("./surely-not-here"), None),
            Err(ResolveError::NotFound(_))
        ));
        // Relative with a slash: made absolute.
        let rel = resolve_command(OsStr::new("./Cargo.toml"), None);
        assert!(matches!(rel, Err(ResolveError::NotExecutable(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_path_is_cleaned_as_the_kernel_compares_it() {
        let dir = std::fs::canonicalize(temp_dir("clean")).unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let script = dir.join("s.sh");
        write_file(&script, 0o755);
        let shown = |p: &str| {
            let raw = format!("{}/{p}", dir.display());
            resolve_command(OsStr::new(&raw), None).unwrap()
        };
        assert_eq!(shown("./s.sh"), script);
        assert_eq!(shown(".//s.sh"), script);
        assert_eq!(shown("sub/../s.sh"), script);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_ungranted_interpreter_is_named() {
        let dir = temp_dir("interp");
        let script = dir.join("s.sh");
        write_file(&script, 0o755); // `#!/bin/sh`
        let s = script.display().to_string();
        assert_eq!(
            ungranted_interpreter(&script, &task_with(&[&s])),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            ungranted_interpreter(&script, &task_with(&[&s, "/bin/sh"])),
            None
        );
        assert_eq!(
            ungranted_interpreter(Path::new("/bin/sh"), &task_with(&[])),
            None
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn task_with(exec: &[&str]) -> Task {
        Task {
            id: "00ab".into(),
            agent: "cli".into(),
            spiffe_id: String::new(),
            intent: None,
            mode: Mode::Enforce,
            state: TaskState::Created,
            end_when: EndWhen::default(),
            end_reason: None,
            created_at: String::new(),
            expires_at: None,
            ended_at: None,
            grants: exec
                .iter()
                .enumerate()
                .map(|(i, spec)| Grant {
                    id: format!("g{}", i + 1),
                    kind: GrantKind::Exec,
                    spec: (*spec).to_owned(),
                    expires_at: None,
                    pending_until: None,
                    resolved: Vec::new(),
                    derived_from: Vec::new(),
                })
                .collect(),
            attached_pids: Vec::new(),
            learned: Vec::new(),
            files: None,
            file_enforcement: String::new(),
            parent: None,
            chain: Vec::new(),
            break_glass: None,
        }
    }

    #[test]
    fn grant_check_follows_canonical_paths() {
        let dir = temp_dir("grants");
        let bin = dir.join("bin");
        std::fs::create_dir_all(bin.join("nested")).unwrap();
        let tool = bin.join("tool");
        write_file(&tool, 0o755);
        write_file(&bin.join("nested").join("deep"), 0o755);
        let link = dir.join("link");
        std::os::unix::fs::symlink(&tool, &link).unwrap();
        let s = |p: &Path| p.display().to_string();

        assert!(is_granted(&tool, &task_with(&[&s(&tool)])));
        assert!(is_granted(&link, &task_with(&[&s(&tool)])));
        assert!(is_granted(&tool, &task_with(&[&s(&link)])));
        let dir_grant = format!("{}/", s(&bin));
        assert!(is_granted(&tool, &task_with(&[&dir_grant])));
        assert!(!is_granted(
            &bin.join("nested").join("deep"),
            &task_with(&[&dir_grant])
        ));
        assert!(!is_granted(&tool, &task_with(&["/bin/sh"])));
        // A directory without the trailing slash grants nothing inside it.
        assert!(!is_granted(&tool, &task_with(&[&s(&bin)])));
        let mut connect_only = task_with(&[&s(&tool)]);
        connect_only.grants[0].kind = GrantKind::Connect;
        assert!(!is_granted(&tool, &connect_only));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
