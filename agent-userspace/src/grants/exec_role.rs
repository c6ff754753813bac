//! Which file an exec decision was about. Both backends report the path the process
//! passed to `execve` and the (device, inode) of the file they checked. For a `#!`
//! script those differ when the check was of the interpreter: the portable backend sees
//! only the interpreter, lsm checks the script and then the interpreter. A report that
//! named the script there would send the user to grant the wrong file.

use std::{
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::kernel_dev;

/// Longest `#!` line read (Linux reads at most 256 bytes of it).
const SHEBANG_MAX: usize = 256;

/// What the checked file was to the exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecRole {
    /// The file the process named, a binary.
    Program,
    /// The file the process named, a `#!` script.
    Script,
    /// The interpreter named by the `#!` line of the file the process named.
    Interpreter,
}

impl ExecRole {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Program => "program",
            Self::Script => "script",
            Self::Interpreter => "interpreter",
        }
    }
}

/// The checked file: its role and its real path (symlinks resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedFile {
    pub role: ExecRole,
    pub real: PathBuf,
}

/// Finds which file (`dev` in the kernel's encoding, `ino`) an exec of `used` checked.
/// A relative `used` is taken against `cwd` (the process's, if still known). `None`
/// when neither the named file nor its interpreter is that file now (it changed, or the
/// process saw another mount namespace): nothing is claimed then.
#[must_use]
pub fn checked_file(used: &str, cwd: Option<&Path>, dev: u32, ino: u64) -> Option<CheckedFile> {
    let named = if Path::new(used).is_absolute() {
        PathBuf::from(used)
    } else {
        cwd?.join(used)
    };
    let is_it =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| kernel_dev(m.dev()) == dev && m.ino() == ino);
    let interpreter = interpreter_of(&named);
    if is_it(&named) {
        return Some(CheckedFile {
            role: if interpreter.is_some() {
                ExecRole::Script
            } else {
                ExecRole::Program
            },
            real: std::fs::canonicalize(&named).unwrap_or(named),
        });
    }
    let interpreter = interpreter?;
    is_it(&interpreter).then(|| CheckedFile {
        role: ExecRole::Interpreter,
        real: std::fs::canonicalize(&interpreter).unwrap_or(interpreter),
    })
}

/// The interpreter path of a `#!` file: the first word after `#!`, if absolute.
#[must_use]
pub fn interpreter_of(path: &Path) -> Option<PathBuf> {
    let mut head = Vec::with_capacity(SHEBANG_MAX);
    std::fs::File::open(path)
        .ok()?
        .take(SHEBANG_MAX as u64)
        .read_to_end(&mut head)
        .ok()?;
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let word = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|w| !w.is_empty())?;
    let path = PathBuf::from(std::str::from_utf8(word).ok()?);
    path.is_absolute().then_some(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn id(p: &Path) -> (u32, u64) {
        let m = std::fs::metadata(p).unwrap();
        (kernel_dev(m.dev()), m.ino())
    }

    #[test]
    fn names_the_interpreter_the_script_or_the_program() {
        let dir = std::env::temp_dir().join(format!("leash-role-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let interp = dir.join("interp");
        std::fs::write(&interp, b"\x7fELF").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&interp, &link).unwrap();
        let script = dir.join("s.sh");
        std::fs::write(&script, format!("#!{} -e\necho hi\n", link.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let used = script.to_str().unwrap();

        // The interpreter checked: its real path, not the link's.
        let (dev, ino) = id(&interp);
        let got = checked_file(used, None, dev, ino).unwrap();
        assert_eq!(got.role, ExecRole::Interpreter);
        assert_eq!(got.real, std::fs::canonicalize(&interp).unwrap());
        // The script itself checked (lsm's first pass).
        let (dev, ino) = id(&script);
        let got = checked_file(used, None, dev, ino).unwrap();
        assert_eq!(got.role, ExecRole::Script);
        // A relative path against the process's working directory.
        let got = checked_file("./s.sh", Some(&dir), dev, ino).unwrap();
        assert_eq!(got.real, std::fs::canonicalize(&script).unwrap());
        assert_eq!(checked_file("./s.sh", None, dev, ino), None);
        // A binary, through a link.
        let (dev, ino) = id(&interp);
        let got = checked_file(link.to_str().unwrap(), None, dev, ino).unwrap();
        assert_eq!(
            (got.role, got.real),
            (ExecRole::Program, std::fs::canonicalize(&interp).unwrap())
        );
        // Neither file: no claim.
        assert_eq!(checked_file(used, None, dev, ino + 1_000_000), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
