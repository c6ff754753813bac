//! File benchmarks: `open()` + `read()` + `close()` of one file, and the Landlock domain
//! of the `restricted` file mode applied alone (no task), as `leash run` builds it.

use std::ffi::CString;

use leash::{
    config::FilesConfig,
    files::{Domain, Extra},
    protocol::{FileMode, FileRules},
};

use super::errno;

/// `bench-open PATH N`: N opens, reads (one 4 KiB read) and closes; mean ns per round.
pub(super) fn open_read(path: &str, n: u32) -> String {
    let Ok(c) = CString::new(path) else {
        return "error bad path".into();
    };
    let mut buf = [0u8; 4096];
    let start = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: a NUL-terminated path; the fd is closed below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return format!("error open errno {}", errno());
        }
        // SAFETY: `buf` is writable for its length; `fd` is ours.
        unsafe {
            libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
        }
    }
    (start.elapsed().as_nanos() / u128::from(n.max(1))).to_string()
}

/// `restricted-bench READ[,READ...] KIND TARGET N`: applies the `restricted` domain with
/// the daemon's default base sets and these `read:` grants, then runs `bench-open` or
/// `bench KIND TARGET N`.
pub(super) fn restricted(reads: &str, kind: &str, target: &str, n: u32) -> String {
    let base = FilesConfig::default();
    let rules = FileRules {
        mode: FileMode::Restricted,
        read: reads.split(',').map(str::to_owned).collect(),
        write: Vec::new(),
        base_read: base.read,
        base_write: base.write,
        exclude: base.exclude,
    };
    match Domain::prepare(&rules, &Extra::default()).and_then(Domain::enforce) {
        Ok(e) if e.fully => {}
        Ok(e) => return format!("error not fully enforced: {e}"),
        Err(e) => return format!("error landlock: {e}"),
    }
    if kind == "open" {
        open_read(target, n)
    } else {
        super::bench(kind, target, n)
    }
}
