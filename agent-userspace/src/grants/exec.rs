//! Exec grants: a path (or `DIR/`) resolved to the files it names now, as the kernel
//! identifies them; `DIR/**` to the directory, below which any file may run.

use std::{
    fs,
    io::Read as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use leash_common::{ExecKey, ScriptKey, grant::SCRIPT_PATH_LEN};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

use super::{FileState, GrantError};

/// One executable file as the kernel identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecFile {
    /// The path it was granted by (after expanding `DIR/`).
    pub path: PathBuf,
    /// Device in the kernel's `s_dev` encoding.
    pub dev: u32,
    pub ino: u64,
    /// Not an ELF image (a `#!` script, or a file a `binfmt_misc` handler runs): the
    /// kernel runs an interpreter for it, and the portable backend also needs its path
    /// (see [`ScriptKey`]).
    pub script: bool,
    /// Its change time and generation when resolved: the kernel denies an exec of
    /// anything else at this identity.
    pub state: FileState,
    /// A directory granted with `DIR/**` (`path` without the `/**`): every file below
    /// it on its file system, now or created later, whatever its content.
    pub tree: bool,
}

impl ExecFile {
    #[must_use]
    pub const fn key(&self, task: u64) -> ExecKey {
        ExecKey {
            task,
            ino: self.ino,
            dev: self.dev,
            _pad: 0,
        }
    }

    /// Keys of the script map: the granted path and, if different, its canonical form;
    /// for a tree, each with a trailing `/` (the prefix a script's path must have).
    pub fn script_keys(&self, task: u64) -> Result<Vec<ScriptKey>, GrantError> {
        if !self.script && !self.tree {
            return Ok(Vec::new());
        }
        let mut paths = vec![self.path.clone()];
        if let Ok(canon) = fs::canonicalize(&self.path)
            && canon != self.path
        {
            paths.push(canon);
        }
        paths
            .into_iter()
            .map(|p| {
                let mut bytes = p.into_os_string().into_encoded_bytes();
                if self.tree && bytes.last() != Some(&b'/') {
                    bytes.push(b'/');
                }
                let p = PathBuf::from(String::from_utf8_lossy(&bytes).into_owned());
                // One byte stays NUL, as the kernel's bounded string read leaves it.
                if bytes.len() >= SCRIPT_PATH_LEN {
                    return Err(GrantError::ScriptPathTooLong(p));
                }
                let mut path = [0u8; SCRIPT_PATH_LEN];
                path[..bytes.len()].copy_from_slice(&bytes);
                Ok(ScriptKey { task, path })
            })
            .collect()
    }
}

/// Converts a userspace `st_dev` into the kernel's `s_dev` (`major << 20 | minor`).
#[must_use]
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | (minor & 0xf_ffff)
}

/// The kernel's `s_dev` as `major:minor`, the way `ls -l`, `stat` and `/proc` print
/// devices (the raw encoding means nothing to a reader).
#[must_use]
pub fn dev_text(kernel_dev: u32) -> String {
    format!("{}:{}", kernel_dev >> 20, kernel_dev & 0xf_ffff)
}

/// Resolves an exec grant to the files it names, as of now, in this process's view of
/// the file system.
pub fn resolve_exec(spec: &str) -> Result<Vec<ExecFile>, GrantError> {
    resolve_exec_in(Path::new("/"), spec)
}

/// Resolves an exec grant inside another root, e.g. `/proc/<pid>/root` of the caller,
/// so that a path means what it means to the process the grant is for (an agent in
/// its own container). Every lookup stays inside that root, symlinks included
/// (`openat2` with `RESOLVE_IN_ROOT`).
pub fn resolve_exec_in(root: &Path, spec: &str) -> Result<Vec<ExecFile>, GrantError> {
    let path = Path::new(spec);
    if !path.is_absolute() {
        return Err(GrantError::RelativePath(path.to_owned()));
    }
    let root_dir = fs::File::open(root).map_err(|source| GrantError::OpenRoot {
        path: path.to_owned(),
        root: root.to_owned(),
        source,
    })?;
    if let Some(dir) = spec.strip_suffix("/**") {
        return tree_dir(&root_dir, spec, dir).map(|d| vec![d]);
    }
    if spec.ends_with('/') {
        let list_error = |source| GrantError::ListDir {
            path: path.to_owned(),
            source,
        };
        let dir = open_in_root(&root_dir, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(list_error)?;
        let entries = fs::read_dir(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&dir)
        ))
        .map_err(list_error)?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(list_error)?;
            // Follows symlinks (inside the root): a link in the directory grants the
            // file it names.
            match exec_file(&root_dir, &path.join(entry.file_name())) {
                Ok(file) => files.push(file),
                // The whole directory is on such a file system: say why.
                Err(
                    e @ (GrantError::Fuse(_) | GrantError::Btrfs(_) | GrantError::OverlayLayers(_)),
                ) => return Err(e),
                Err(_) => {}
            }
        }
        if files.is_empty() {
            return Err(GrantError::EmptyDir(path.to_owned()));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        return Ok(files);
    }
    exec_file(&root_dir, path).map(|f| vec![f])
}

/// The directory of a `DIR/**` grant. Its path must be clean, since the portable
/// backend matches scripts below it by path (docs/enforcement.md).
fn tree_dir(root: &fs::File, spec: &str, dir: &str) -> Result<ExecFile, GrantError> {
    let clean = dir.starts_with('/')
        && dir[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !clean {
        return Err(GrantError::BadTree(spec.to_owned()));
    }
    let path = Path::new(dir);
    let opened =
        open_in_root(root, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(|source| {
            if source.raw_os_error() == Some(libc::ENOTDIR) {
                GrantError::NotDirectory {
                    path: path.to_owned(),
                }
            } else {
                GrantError::Open {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    let meta = opened.metadata().map_err(|source| GrantError::Stat {
        path: path.to_owned(),
        source,
    })?;
    let dev = super::file_system::kernel_device(&opened, &meta, path, || {
        open_in_root(
            root,
            path.parent().unwrap_or(Path::new("/")),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        )
    })?;
    Ok(ExecFile {
        path: path.to_owned(),
        dev,
        ino: meta.ino(),
        script: false,
        state: FileState::default(),
        tree: true,
    })
}

/// `openat2(root, path, flags, RESOLVE_IN_ROOT)`, close-on-exec.
fn open_in_root(root: &fs::File, path: &Path, flags: OFlag) -> std::io::Result<fs::File> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    Ok(nix::fcntl::openat2(root, rel, how)?.into())
}

fn exec_file(root: &fs::File, path: &Path) -> Result<ExecFile, GrantError> {
    // Looked at before it is opened for reading: opening a FIFO waits for a writer
    // (the request would never return) and opening a device acts on it.
    let named = open_in_root(root, path, OFlag::O_PATH).map_err(|source| GrantError::Open {
        path: path.to_owned(),
        source,
    })?;
    let meta = named.metadata().map_err(|source| GrantError::Stat {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(GrantError::NotRegular(path.to_owned()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(GrantError::NotExecutable(path.to_owned()));
    }
    // The same file, opened for reading through its descriptor (no second lookup);
    // without read permission the O_PATH descriptor serves, with no generation.
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&named)
        ))
        .unwrap_or(named);
    let dev = super::file_system::kernel_device(&file, &meta, path, || {
        open_in_root(
            root,
            path.parent().unwrap_or(Path::new("/")),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        )
    })?;
    // Anything but an ELF image is run through a handler (`#!`, binfmt_misc), which
    // swaps in an interpreter before the portable backend sees the exec. A file too
    // short to read four bytes of is taken for one too.
    let mut magic = [0u8; 4];
    let script = file.read_exact(&mut magic).is_err() || &magic != b"\x7fELF";
    Ok(ExecFile {
        path: path.to_owned(),
        dev,
        ino: meta.ino(),
        script,
        state: FileState::of(&file, &meta),
        tree: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_grants_resolve_files_and_dirs() {
        let dir = std::env::temp_dir().join(format!("leash-grant-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("tool");
        fs::write(&bin, b"\x7fELF").unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.join("run.sh");
        fs::write(&script, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("data.txt"), b"x").unwrap();
        // Run by a binfmt_misc handler: matched by path on the portable backend too.
        let handled = dir.join("handled");
        fs::write(&handled, b"LEASH-MAGIC\n").unwrap();
        fs::set_permissions(&handled, fs::Permissions::from_mode(0o755)).unwrap();

        let files = resolve_exec(&format!("{}/", dir.display())).unwrap();
        assert_eq!(files.len(), 3, "only the executables: {files:?}");
        assert!(files.iter().any(|f| f.script && f.path == script));
        assert!(files.iter().any(|f| f.script && f.path == handled));
        let one = resolve_exec(bin.to_str().unwrap()).unwrap();
        assert_eq!(one[0].ino, fs::metadata(&bin).unwrap().ino());
        assert!(!one[0].script);

        let err = resolve_exec(dir.join("data.txt").to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("not executable"), "{err}");
        let err = resolve_exec("bin/ls").unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
        let err = resolve_exec(dir.join("missing").to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("grant an existing file"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_tree_grant_is_its_clean_directory() {
        let dir = std::env::temp_dir().join(format!("leash-grant-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("file"), b"x").unwrap();
        let d = dir.display();
        let tree = resolve_exec(&format!("{d}/sub/**")).unwrap();
        assert_eq!(tree.len(), 1);
        assert!(tree[0].tree && !tree[0].script);
        assert_eq!(tree[0].path, dir.join("sub"));
        assert_eq!(tree[0].ino, fs::metadata(dir.join("sub")).unwrap().ino());
        // Its script keys end with `/`: the prefix a script below it must have.
        let keys = tree[0].script_keys(7).unwrap();
        let want = format!("{d}/sub/");
        assert_eq!(&keys[0].path[..want.len()], want.as_bytes());
        assert_eq!(keys[0].path[want.len()], 0);

        for bad in [
            "/**".to_owned(),
            format!("{d}/sub/../sub/**"),
            format!("{d}//sub/**"),
            format!("{d}/./sub/**"),
        ] {
            let err = resolve_exec(&bad).unwrap_err();
            assert!(matches!(err, GrantError::BadTree(_)), "{bad}: {err}");
        }
        let err = resolve_exec(&format!("{d}/file/**")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        let err = resolve_exec(&format!("{d}/missing/**")).unwrap_err();
        assert!(err.to_string().contains("grant an existing file"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Found by the `grant_spec` fuzz target: an exec grant naming a FIFO (or a
    /// directory grant over one) opened it for reading, which waits for a writer, so the
    /// request never returned; and a device would have been opened.
    #[test]
    fn a_fifo_is_refused_without_opening_it() {
        let dir = std::env::temp_dir().join(format!("leash-grant-fifo-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("tool"), b"\x7fELF").unwrap();
        fs::set_permissions(dir.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let fifo =
            std::ffi::CString::new(dir.join("pipe").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that lives for the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o755) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let (one, all) = (
            dir.join("pipe").display().to_string(),
            format!("{}/", dir.display()),
        );
        std::thread::spawn(move || {
            let _ = tx.send((resolve_exec(&one), resolve_exec(&all)));
        });
        let (one, all) = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("resolving a grant of a FIFO blocked");
        assert!(matches!(one, Err(GrantError::NotRegular(_))), "{one:?}");
        let all = all.unwrap();
        assert_eq!(all.len(), 1, "only the executable file: {all:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kernel_dev_encoding() {
        // st_dev 8:1 (glibc encoding) is s_dev 8 << 20 | 1.
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(dev_text(kernel_dev(libc::makedev(259, 3))), "259:3");
        assert_eq!(
            kernel_dev(libc::makedev(259, 70_000)),
            (259 << 20) | 0x1_1170
        );
    }
}
