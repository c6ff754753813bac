//! Class 8, exec without a path: `execveat(fd, "", AT_EMPTY_PATH)` and a memfd.

use harness::{Action, Reason};
use harness::{Harness, Scratch, exec_denied, probe, spec};

#[test]
fn exec_without_a_path_is_stopped() {
    let h = Harness::load();
    let s = Scratch::new("nopath");
    let granted = s.copy_true("granted");
    let other = s.copy_true("other");
    let task = h.task(spec(&[&granted], &[]));

    assert_eq!(
        task.probe(&format!("execveat {granted}")),
        "exit 0",
        "execveat of a granted file"
    );
    task.assert_denied(
        Action::Exec,
        Reason::NotGranted,
        exec_denied(h.backend()),
        || task.probe(&format!("execveat {other}")),
    );
    // A memfd is a new inode on an internal mount: never granted.
    task.assert_denied(
        Action::Exec,
        Reason::NotGranted,
        exec_denied(h.backend()),
        || task.probe(&format!("memfd-exec {granted}")),
    );

    let out = std::process::Command::new(probe())
        .args(["memfd-exec", &other])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "exit 0",
        "untagged memfd exec works"
    );
}
