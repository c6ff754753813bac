//! Class 7, other names for the same file: symlinks and hardlinks are the granted
//! inode; a copy is a new file and is not granted.

use harness::{Action, Reason};
use harness::{Harness, Scratch, exec_denied, spec};

#[test]
fn other_names_for_the_same_file() {
    let h = Harness::load();
    let s = Scratch::new("names");
    let granted = s.copy_true("granted");
    let sym = s.path("symlink");
    let hard = s.path("hardlink");
    std::os::unix::fs::symlink(&granted, &sym).unwrap();
    std::fs::hard_link(&granted, &hard).unwrap();
    let copy = s.copy_true("copy");
    let task = h.task(spec(&[&granted], &[]));

    assert_eq!(
        task.probe(&format!("exec {sym}")),
        "exit 0",
        "symlink: same inode"
    );
    assert_eq!(
        task.probe(&format!("exec {hard}")),
        "exit 0",
        "hardlink: same inode"
    );
    // A copy is a new file.
    let ev = task.assert_denied(
        Action::Exec,
        Reason::NotGranted,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {copy}")),
    );
    assert!(
        matches!(ev.target, leash::kernel::events::Target::Exec { ref path, .. } if *path == copy)
    );
}
