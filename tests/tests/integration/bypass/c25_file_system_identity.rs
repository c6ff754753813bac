//! Class 25, file systems whose identities are not what `stat` says: an exec grant must
//! name the one file the kernel will run, and hold it to its content.
//!
//! - overlayfs: the kernel sees the overlay's device; the content lives in a layer,
//!   whose change time the overlay's inode does not follow when the layer is written
//!   under it. Grants match, and any change through the overlay (copy-up) or under it
//!   is `changed_since_grant`. Layers on different file systems without `xino` repeat
//!   inode numbers: refused at grant time.
//! - btrfs: subvolumes share one superblock device and repeat inode numbers; the kernel
//!   reads the subvolume's own device, so a grant names one subvolume's file. A
//!   reflink copy is another file; a reflink over the granted file is a change.
//! - FUSE: the server makes up content and attributes: refused at grant time, and
//!   denied at exec whatever the map holds.
//!
//! The file systems are mounted in this process's mount namespace (grants resolve
//! names in the caller's namespace), under a scratch directory, and lazily unmounted
//! on drop whatever happens.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    process::Command,
    time::Duration,
};

use harness::{Action, Harness, Reason, Scratch, exec_denied, spec};
use leash::grants::{FileState, GrantError, kernel_dev, resolve_exec};
use leash_common::ExecKey;

/// A mount under a scratch directory, lazily unmounted on drop.
struct Mounted {
    dir: String,
}

impl Mounted {
    /// `mount ARGS... DIR`; `None` (with the reason printed) where the kernel or the
    /// system lacks the file system (the VM guest loads no modules).
    fn new(what: &str, args: &[&str], dir: &str) -> Option<Self> {
        Self::by("mount", what, args, dir)
    }

    /// `PROGRAM ARGS... DIR`, a program that mounts.
    fn by(program: &str, what: &str, args: &[&str], dir: &str) -> Option<Self> {
        fs::create_dir_all(dir).unwrap();
        let out = match Command::new(program).args(args).arg(dir).output() {
            Ok(out) => out,
            Err(e) => {
                eprintln!("skipped: cannot run {program} to mount {what}: {e}");
                return None;
            }
        };
        if !out.status.success() {
            eprintln!(
                "skipped: cannot mount {what}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Self {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", &self.dir]).status();
    }
}

/// Change times come from a coarse clock: wait one tick out so a change shows.
fn next_tick() {
    std::thread::sleep(Duration::from_millis(20));
}

fn copy_exec(from: &str, to: &str) {
    fs::copy(from, to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Writes `from`'s bytes into the existing file `path`, keeping its inode.
fn rewrite_in_place(path: &str, from: &str) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(&fs::read(from).unwrap()).unwrap();
}

fn ok(cmd: &mut Command) -> bool {
    cmd.status().is_ok_and(|s| s.success())
}

fn untagged_exit(path: &str) -> Option<i32> {
    Command::new(path).status().unwrap().code()
}

/// An overlay with every layer on one file system, as container runtimes make them.
struct Overlay {
    lower: String,
    upper: String,
    merged: String,
    _mount: Mounted,
}

impl Overlay {
    fn new(s: &Scratch, upper_fs: Option<&Mounted>, files: &[&str]) -> Option<Self> {
        let lower = s.path("lower");
        let top = upper_fs.map_or_else(|| s.path("rw"), |m| m.dir.clone());
        let (upper, work, merged) = (
            format!("{top}/upper"),
            format!("{top}/work"),
            s.path("merged"),
        );
        for d in [&lower, &upper, &work] {
            fs::create_dir_all(d).unwrap();
        }
        for f in files {
            copy_exec("/bin/true", &format!("{lower}/{f}"));
        }
        let opts = format!("lowerdir={lower},upperdir={upper},workdir={work}");
        let mount = Mounted::new(
            "overlayfs",
            &["-t", "overlay", "overlay", "-o", &opts],
            &merged,
        )?;
        Some(Self {
            lower,
            upper,
            merged,
            _mount: mount,
        })
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.merged)
    }
}

#[test]
fn an_overlay_file_is_matched_and_held_to_the_layer_that_holds_it() {
    let h = Harness::load();
    let s = Scratch::new("overlay");
    let Some(ov) = Overlay::new(&s, None, &["written", "chmoded", "lower-written"]) else {
        return;
    };
    let (written, chmoded, under) = (
        ov.path("written"),
        ov.path("chmoded"),
        ov.path("lower-written"),
    );
    let task = h.task(spec(&[&written, &chmoded, &under], &[]));
    // The grant (stat's device and inode) is what the kernel sees at exec.
    for p in [&written, &chmoded, &under] {
        assert_eq!(task.probe(&format!("exec {p}")), "exit 0", "{p}");
    }
    next_tick();
    // A write through the overlay copies the file up: new content, denied.
    rewrite_in_place(&written, "/bin/false");
    task.assert_denied(
        Action::Exec,
        Reason::ChangedSinceGrant,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {written}")),
    );
    // A chmod copies up too.
    fs::set_permissions(&chmoded, fs::Permissions::from_mode(0o775)).unwrap();
    task.assert_denied(
        Action::Exec,
        Reason::ChangedSinceGrant,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {chmoded}")),
    );
    // A write to the lower layer under the mounted overlay: the overlay's inode keeps
    // its old attributes, the lower file's change time moved.
    rewrite_in_place(&format!("{}/lower-written", ov.lower), "/bin/false");
    task.assert_denied(
        Action::Exec,
        Reason::ChangedSinceGrant,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {under}")),
    );
    assert_eq!(
        untagged_exit(&under),
        Some(1),
        "the new content is what runs"
    );

    // The copied-up file granted again runs from the upper layer, and a write to the
    // upper layer under the overlay is a change too.
    let again = h.task(spec(&[&written], &[]));
    assert_eq!(again.probe(&format!("exec {written}")), "exit 1");
    next_tick();
    rewrite_in_place(&format!("{}/written", ov.upper), "/bin/true");
    again.assert_denied(
        Action::Exec,
        Reason::ChangedSinceGrant,
        exec_denied(h.backend()),
        || again.probe(&format!("exec {written}")),
    );
    assert_eq!(untagged_exit(&written), Some(0));
}

/// With the upper layer on another file system and no `xino`, a file reports its
/// layer's pseudo device and inode numbers repeat across layers: the kernel's
/// (device, inode) would name two files, so the grant is refused. With `xino` (or
/// where the kernel turns it on by itself) the grant matches.
#[test]
fn an_overlay_across_file_systems_is_matched_or_refused_at_grant_time() {
    let h = Harness::load();
    let s = Scratch::new("overlay-layers");
    let Some(tmp) = Mounted::new("tmpfs", &["-t", "tmpfs", "leash-test"], &s.path("tmp")) else {
        return;
    };
    let Some(ov) = Overlay::new(&s, Some(&tmp), &["tool"]) else {
        return;
    };
    let tool = ov.path("tool");
    let unified = fs::metadata(&tool).unwrap().dev() == fs::metadata(&ov.merged).unwrap().dev();
    match resolve_exec(&tool) {
        Err(GrantError::OverlayLayers(p)) if !unified => {
            assert_eq!(p.display().to_string(), tool);
            let msg = GrantError::OverlayLayers(p).to_string();
            assert!(msg.contains("xino"), "{msg}");
        }
        Ok(_) if unified => {
            let task = h.task(spec(&[&tool], &[]));
            assert_eq!(task.probe(&format!("exec {tool}")), "exit 0");
        }
        other => panic!("unified {unified}: {other:?}"),
    }
}

/// A small btrfs on a loop device with a subvolume; unmounted on drop.
fn btrfs(s: &Scratch) -> Option<Mounted> {
    let image = s.path("btrfs.img");
    fs::File::create(&image)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    if !ok(Command::new("mkfs.btrfs").args(["-q", "-f", &image])) {
        eprintln!("skipped: mkfs.btrfs is missing or failed");
        return None;
    }
    let m = Mounted::new("btrfs", &["-o", "loop", &image], &s.path("btrfs"))?;
    assert!(ok(Command::new("btrfs").args([
        "-q",
        "subvolume",
        "create",
        &format!("{}/sub", m.dir)
    ])));
    Some(m)
}

#[test]
fn btrfs_subvolumes_are_told_apart_and_reflinks_are_other_files() {
    let h = Harness::load();
    let s = Scratch::new("btrfs");
    let Some(m) = btrfs(&s) else {
        return;
    };
    let top = format!("{}/top", m.dir);
    let tool = format!("{}/sub/tool", m.dir);
    copy_exec("/bin/true", &top);
    copy_exec("/bin/true", &tool);
    // The first file of each subvolume gets the same inode number on the one superblock.
    assert_eq!(
        fs::metadata(&top).unwrap().ino(),
        fs::metadata(&tool).unwrap().ino()
    );
    let task = h.task(spec(&[&tool], &[]));
    assert_eq!(task.probe(&format!("exec {tool}")), "exit 0");
    task.assert_denied(
        Action::Exec,
        Reason::NotGranted,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {top}")),
    );
    let other = h.task(spec(&[&top], &[]));
    assert_eq!(other.probe(&format!("exec {top}")), "exit 0");
    other.assert_denied(
        Action::Exec,
        Reason::NotGranted,
        exec_denied(h.backend()),
        || other.probe(&format!("exec {tool}")),
    );

    // A snapshot holds the same inode (number, change time, generation) in another
    // subvolume: another file.
    let snap = format!("{}/snap", m.dir);
    assert!(ok(Command::new("btrfs").args([
        "-q",
        "subvolume",
        "snapshot",
        &format!("{}/sub", m.dir),
        &snap
    ])));
    task.assert_denied(
        Action::Exec,
        Reason::NotGranted,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {snap}/tool")),
    );
    // A reflink copy shares the granted file's data but is a new inode.
    let copy = format!("{}/sub/copy", m.dir);
    assert!(ok(Command::new("cp").args([
        "--reflink=always",
        &tool,
        &copy
    ])));
    task.assert_denied(
        Action::Exec,
        Reason::NotGranted,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {copy}")),
    );
    // A reflink over the granted file replaces its data in place.
    let false_copy = format!("{}/sub/false", m.dir);
    copy_exec("/bin/false", &false_copy);
    next_tick();
    assert!(ok(Command::new("cp").args([
        "--reflink=always",
        &false_copy,
        &tool
    ])));
    task.assert_denied(
        Action::Exec,
        Reason::ChangedSinceGrant,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {tool}")),
    );
    assert_eq!(untagged_exit(&tool), Some(1));
}

#[test]
fn fuse_files_are_refused_at_grant_time_and_denied_at_exec() {
    let h = Harness::load();
    let s = Scratch::new("fuse");
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    copy_exec("/bin/true", &format!("{src}/tool"));
    let Some(m) = Mounted::by("bindfs", "a FUSE file system", &[&src], &s.path("fuse")) else {
        return;
    };
    let tool = format!("{}/tool", m.dir);
    assert!(
        matches!(resolve_exec(&tool), Err(GrantError::Fuse(_))),
        "a FUSE file is refused"
    );
    assert!(
        matches!(
            resolve_exec(&format!("{}/", m.dir)),
            Err(GrantError::Fuse(_))
        ),
        "a directory on FUSE says why"
    );
    // A grant the map holds anyway, as a device number reused by a FUSE mount would
    // leave it, with the change time the server reports: the kernel still denies.
    let task = h.task(spec(&[], &[]));
    let file = fs::File::open(&tool).unwrap();
    let meta = file.metadata().unwrap();
    let key = ExecKey {
        task: task.id,
        ino: meta.ino(),
        dev: kernel_dev(meta.dev()),
        _pad: 0,
    };
    h.enforcer
        .lock()
        .unwrap()
        .maps_mut()
        .grant_exec(&key, FileState::of(&file, &meta).grant(0))
        .unwrap();
    task.assert_denied(
        Action::Exec,
        Reason::NotGranted,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {tool}")),
    );
    assert_eq!(
        untagged_exit(&tool),
        Some(0),
        "untagged processes unaffected"
    );
}
