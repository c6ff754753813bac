//! `linger MS FILE CMD...`: leaves a background process behind, as `( sleep; cmd ) &`
//! in a shell would. Its forked child writes its pid to `FILE.pid`, waits MS
//! milliseconds, runs CMD and writes CMD's outcome to `FILE`. The probe returns `ok`
//! once the pid file is written: a task that ends (and kills) when the probe exits must
//! find a survivor that has already said who it is, however slow the machine. The child
//! lets go of stdout and stderr, so a caller reading them sees EOF when the probe itself
//! exits.

use std::time::Duration;

use super::errno;

pub(crate) fn linger(ms: &str, file: &str, cmd: &[String]) -> String {
    let Ok(ms) = ms.parse::<u64>() else {
        return format!("error bad delay {ms:?}");
    };
    let mut fds = [0; 2];
    // SAFETY: pipe() fills the two-element array it is given.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return format!("errno {}", errno());
    }
    let [ready_r, ready_w] = fds;
    // SAFETY: fork() in the probe, which runs no other thread here; the child makes
    // plain syscalls and leaves with _exit.
    match unsafe { libc::fork() } {
        -1 => format!("errno {}", errno()),
        0 => {
            // SAFETY: open, dup2 and close on fds this process owns.
            unsafe {
                libc::close(ready_r);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
            }
            let _ = std::fs::write(format!("{file}.pid"), std::process::id().to_string());
            // SAFETY: one byte from a local to the pipe's write end, which this child owns.
            unsafe {
                libc::write(ready_w, [1u8].as_ptr().cast(), 1);
                libc::close(ready_w);
            }
            std::thread::sleep(Duration::from_millis(ms));
            let out = super::run(cmd);
            let _ = std::fs::write(file, out);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        _ => {
            let mut byte = 0u8;
            // SAFETY: close and a one-byte read into a local, on fds this process owns.
            let n = unsafe {
                libc::close(ready_w);
                let n = libc::read(ready_r, (&raw mut byte).cast(), 1);
                libc::close(ready_r);
                n
            };
            if n == 1 {
                "ok".into()
            } else {
                "error the survivor died before it wrote its pid".into()
            }
        }
    }
}
