//! Class 10, races: replacing a granted path. Grants follow the inode checked at
//! exec time, so the path's new file is not granted.

use std::fs;

use harness::{Action, Reason};
use harness::{Harness, Scratch, exec_denied, spec};

#[test]
fn replacing_the_granted_path_does_not_carry_the_grant() {
    let h = Harness::load();
    let s = Scratch::new("replace");
    let path = s.copy_true("tool");
    let task = h.task(spec(&[&path], &[]));
    assert_eq!(task.probe(&format!("exec {path}")), "exit 0");
    // Same path, new file (rename over it, as an attacker with write access would).
    let new = s.copy_true("tool.new");
    fs::rename(&new, &path).unwrap();
    task.assert_denied(
        Action::Exec,
        Reason::NotGranted,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {path}")),
    );
}
