//! Class 23, granted files that change: an exec grant covers the file as it was when
//! granted. A write in place (same device, same inode), a chmod, or a new file that
//! reused a deleted file's inode number all move the inode's change time, and the
//! kernel denies the exec with `changed_since_grant`.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    process::Command,
    time::Duration,
};

use harness::{Action, Reason};
use harness::{Harness, Scratch, exec_denied, spec};

/// Timestamps are taken from a coarse clock (one tick is a few ms): wait one out so
/// that a change shows in the change time.
fn next_tick() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Writes `content` into the existing file at `path`, keeping its inode.
fn rewrite_in_place(path: &str, content: &[u8]) {
    let ino = fs::metadata(path).unwrap().ino();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(content).unwrap();
    drop(f);
    assert_eq!(fs::metadata(path).unwrap().ino(), ino, "same inode");
}

fn untagged_exit(path: &str) -> Option<i32> {
    Command::new(path).status().unwrap().code()
}

#[test]
fn a_granted_binary_rewritten_in_place_is_denied() {
    let h = Harness::load();
    let s = Scratch::new("changed-binary");
    let path = s.copy_true("tool");
    let task = h.task(spec(&[&path], &[]));
    assert_eq!(task.probe(&format!("exec {path}")), "exit 0");
    next_tick();
    rewrite_in_place(&path, &fs::read("/bin/false").unwrap());
    task.assert_denied(
        Action::Exec,
        Reason::ChangedSinceGrant,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {path}")),
    );
    // Untagged processes run the new content as ever.
    assert_eq!(untagged_exit(&path), Some(1));
}

#[test]
fn a_chmod_after_the_grant_is_a_change_too() {
    let h = Harness::load();
    let s = Scratch::new("changed-mode");
    let path = s.copy_true("tool");
    let task = h.task(spec(&[&path], &[]));
    assert_eq!(task.probe(&format!("exec {path}")), "exit 0");
    next_tick();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o775)).unwrap();
    task.assert_denied(
        Action::Exec,
        Reason::ChangedSinceGrant,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {path}")),
    );
    // Granting it again records the file as it is now.
    let again = h.task(spec(&[&path], &[]));
    assert_eq!(again.probe(&format!("exec {path}")), "exit 0");
}

/// A shebang script's content is checked on both backends when the interpreter opens
/// it to read it (on portable, whose exec hook sees only the interpreter, the open's
/// exit kills it before it reads a byte), and on lsm at exec already.
#[test]
fn a_granted_script_rewritten_in_place_is_denied() {
    let h = Harness::load();
    let s = Scratch::new("changed-script");
    let path = s.path("tool.sh");
    let ran = s.path("ran");
    let new_ran = s.path("new-ran");
    fs::write(&path, format!("#!/bin/sh\n: > {ran}\nexit 0\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let task = h.task(spec(&[&path, "/bin/sh"], &[]));
    // Unchanged, it runs (and the interpreter's open of it is no change).
    assert_eq!(task.probe(&format!("exec {path}")), "exit 0");
    assert!(fs::metadata(&ran).is_ok(), "the granted script ran");
    next_tick();
    rewrite_in_place(
        &path,
        format!("#!/bin/sh\n: > {new_ran}\nexit 3\n").as_bytes(),
    );
    task.assert_denied(
        Action::Exec,
        Reason::ChangedSinceGrant,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {path}")),
    );
    assert!(
        fs::metadata(&new_ran).is_err(),
        "the rewritten script's code must not run"
    );
    // Untagged processes run the new content as ever.
    assert_eq!(untagged_exit(&path), Some(3));
    assert!(fs::metadata(&new_ran).is_ok());
}

/// A tagged process may write a granted script (a write-only open reads nothing);
/// running it afterwards is refused, and so is reading it: the interpreter's open
/// cannot be told from another (`EPERM` on lsm, killed on portable; docs/security.md,
/// class 23).
#[test]
fn a_task_writing_its_granted_script_cannot_run_it() {
    let h = Harness::load();
    let s = Scratch::new("script-write");
    let path = s.path("tool.sh");
    fs::write(&path, b"#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let task = h.task(spec(&[&path, "/bin/sh"], &[]));
    assert_eq!(task.probe(&format!("open-read {path}")), "ok");
    next_tick();
    // The same bytes again: the content is equal, but the file was written.
    assert_eq!(task.probe(&format!("open-write {path} #!/bin/sh")), "ok");
    task.assert_denied(
        Action::Exec,
        Reason::ChangedSinceGrant,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {path}")),
    );
    // A read of it is taken for its interpreter's: refused.
    task.assert_denied(
        Action::Exec,
        Reason::ChangedSinceGrant,
        harness::refused(h.backend()),
        || task.probe(&format!("open-read {path}")),
    );
}

/// A small ext4 file system on a loop device, mounted at `dir`; unmounted on drop.
struct Ext4 {
    dir: String,
}

impl Ext4 {
    /// `None` (with the reason printed) where mkfs.ext4 or loop devices are missing.
    fn mount(s: &Scratch) -> Option<Self> {
        let image = s.path("ext4.img");
        let dir = s.path("mnt");
        fs::create_dir_all(&dir).unwrap();
        fs::File::create(&image).unwrap().set_len(8 << 20).unwrap();
        let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
        if !ok(Command::new("mkfs.ext4").args(["-q", "-F", "-N", "32", &image])) {
            eprintln!("skipped: mkfs.ext4 is missing or failed");
            return None;
        }
        if !ok(Command::new("mount").args(["-o", "loop", &image, &dir])) {
            eprintln!("skipped: cannot mount an ext4 image on a loop device");
            return None;
        }
        Some(Self { dir })
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// ext4 gives a deleted file's inode number to the next file it creates (lowest free
/// number first): the new file is at the granted (device, inode) but has its own
/// change time and generation. A private small file system keeps other files from
/// taking the number first.
#[test]
fn a_recycled_inode_number_does_not_carry_the_grant() {
    let h = Harness::load();
    let s = Scratch::new("recycled-inode");
    let Some(ext4) = Ext4::mount(&s) else {
        return;
    };
    let path = format!("{}/tool", ext4.dir);
    fs::copy("/bin/true", &path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    let ino = fs::metadata(&path).unwrap().ino();
    let task = h.task(spec(&[&path], &[]));
    assert_eq!(task.probe(&format!("exec {path}")), "exit 0");
    fs::remove_file(&path).unwrap();
    let candidate = format!("{}/new", ext4.dir);
    fs::copy("/bin/true", &candidate).unwrap();
    assert_eq!(
        fs::metadata(&candidate).unwrap().ino(),
        ino,
        "ext4 reuses the lowest free inode number"
    );
    fs::set_permissions(&candidate, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&candidate, &path).unwrap();
    task.assert_denied(
        Action::Exec,
        Reason::ChangedSinceGrant,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {path}")),
    );
    // Untagged processes run it as ever.
    assert_eq!(untagged_exit(&path), Some(0));
}
