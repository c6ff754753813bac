//! `linger MS FILE CMD...`: leaves a background process behind, as `( sleep; cmd ) &`
//! in a shell would. The probe returns `ok` at once; its forked child writes its pid to
//! `FILE.pid`, waits MS milliseconds, runs CMD and writes CMD's outcome to `FILE`. The
//! child lets go of stdout and stderr, so a caller reading them sees EOF when the probe
//! itself exits.

use std::time::Duration;

use super::errno;

pub(crate) fn linger(ms: &str, file: &str, cmd: &[String]) -> String {
    let Ok(ms) = ms.parse::<u64>() else {
        return format!("error bad delay {ms:?}");
    };
    // SAFETY: fork() in the probe, which runs no other thread here; the child makes
    // plain syscalls and leaves with _exit.
    match unsafe { libc::fork() } {
        -1 => format!("errno {}", errno()),
        0 => {
            // SAFETY: open and dup2 on fds this process owns.
            unsafe {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
            }
            let _ = std::fs::write(format!("{file}.pid"), std::process::id().to_string());
            std::thread::sleep(Duration::from_millis(ms));
            let out = super::run(cmd);
            let _ = std::fs::write(file, out);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        _ => "ok".into(),
    }
}
