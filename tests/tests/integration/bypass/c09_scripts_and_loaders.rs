//! Class 9, scripts and loaders: a shebang script needs both the script and its
//! interpreter; `ld.so /path/to/binary` needs ld.so granted; a `DIR/**` grant covers
//! what lies below DIR and nothing a path can only name from there.

use std::{fs, os::unix::fs::PermissionsExt as _};

use harness::{Action, Reason};
use harness::{Harness, Scratch, exec_denied, probe, spec};

#[test]
fn shebang_script_needs_script_and_interpreter() {
    let h = Harness::load();
    let s = Scratch::new("shebang");
    let interp = s.copy_true("interp");
    let script = s.path("script.sh");
    fs::write(&script, format!("#!{interp}\n")).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let denied = exec_denied(h.backend());

    let both = h.task(spec(&[&script, &interp], &[]));
    assert_eq!(both.probe(&format!("exec {script}")), "exit 0");

    let only_interp = h.task(spec(&[&interp], &[]));
    // The script is not granted. The portable backend sees only the interpreter's
    // image and names the script in the reason; lsm checks the script's inode itself.
    let reason = match h.backend() {
        leash::Backend::Portable => Reason::ScriptNotGranted,
        leash::Backend::Lsm => Reason::NotGranted,
    };
    only_interp.assert_denied(Action::Exec, reason, denied, || {
        only_interp.probe(&format!("exec {script}"))
    });

    let only_script = h.task(spec(&[&script], &[]));
    assert_eq!(
        only_script.probe(&format!("exec {script}")),
        denied,
        "interpreter not granted"
    );
}

#[test]
fn the_dynamic_loader_is_a_program_like_any_other() {
    let Some(ld) = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("skipped: no dynamic loader at a known path");
        return;
    };
    let h = Harness::load();
    let s = Scratch::new("ldso");
    let granted = s.copy_true("granted");
    let task = h.task(spec(&[&granted], &[]));
    // ld.so would map and run the granted binary without exec'ing it: ld.so itself is
    // the program exec'd, and it is not granted.
    let ev = task.assert_denied(
        Action::Exec,
        Reason::NotGranted,
        exec_denied(h.backend()),
        || task.probe(&format!("exec {ld} {granted}")),
    );
    assert!(matches!(
        ev.target,
        leash::kernel::events::Target::Exec { .. }
    ));
    assert_eq!(task.probe(&format!("exec {granted}")), "exit 0");
}

/// `DIR/**`: files written below DIR after the grant run, at any depth, scripts
/// included; a file outside it, one moved out of it, and a script reached through
/// `..` from inside it are stopped; untagged processes are unaffected.
#[test]
fn a_tree_grant_runs_what_is_written_below_it_and_nothing_else() {
    let h = Harness::load();
    let s = Scratch::new("tree");
    let interp = s.copy_true("interp");
    let outside = s.copy_true("outside");
    let venv = s.path("venv");
    fs::create_dir_all(format!("{venv}/bin")).unwrap();
    let task = h.task(spec(&[&format!("{venv}/**"), &interp], &[]));
    let denied = exec_denied(h.backend());

    // Written after the grant, as a venv's `bin/pip` would be.
    fs::create_dir_all(format!("{venv}/lib/a/b/c")).unwrap();
    let tool = format!("{venv}/bin/tool");
    let deep = format!("{venv}/lib/a/b/c/deep");
    for p in [&tool, &deep] {
        fs::copy("/bin/true", p).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = format!("{venv}/bin/run.sh");
    let sneaky = s.path("sneaky.sh");
    for p in [&script, &sneaky] {
        fs::write(p, format!("#!{interp}\n")).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(task.probe(&format!("exec {tool}")), "exit 0");
    assert_eq!(task.probe(&format!("exec {deep}")), "exit 0");
    assert_eq!(task.probe(&format!("exec {script}")), "exit 0");

    task.assert_denied(Action::Exec, Reason::NotGranted, denied, || {
        task.probe(&format!("exec {outside}"))
    });
    // A script outside the tree, by a path that starts inside it.
    let reason = match h.backend() {
        leash::Backend::Portable => Reason::ScriptNotGranted,
        leash::Backend::Lsm => Reason::NotGranted,
    };
    task.assert_denied(Action::Exec, reason, denied, || {
        task.probe(&format!("exec {venv}/bin/../../sneaky.sh"))
    });
    // Moved out of the tree, it is an ungranted file again.
    let moved = s.path("moved");
    fs::rename(&tool, &moved).unwrap();
    assert_eq!(task.probe(&format!("exec {moved}")), denied);

    let out = std::process::Command::new(probe())
        .args(["exec", &moved])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "exit 0");
}

/// The portable backend matches a script by its exec path as given: one with `.`,
/// `..` or `//` in it names the granted script but does not match, and is refused
/// (fail closed; the denial report says to run it by its clean absolute path). The lsm
/// backend checks the script's inode and runs it.
#[test]
fn a_script_by_an_unclean_path_is_refused_on_portable_and_run_on_lsm() {
    let h = Harness::load();
    let s = Scratch::new("unclean-path");
    let interp = s.copy_true("interp");
    let dir = s.path("d");
    fs::create_dir_all(format!("{dir}/sub")).unwrap();
    let script = format!("{dir}/s.sh");
    fs::write(&script, format!("#!{interp}\n")).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let task = h.task(spec(&[&script, &interp], &[]));
    assert_eq!(task.probe(&format!("exec {script}")), "exit 0");
    for path in [
        format!("{dir}/./s.sh"),
        format!("{dir}//s.sh"),
        format!("{dir}/sub/../s.sh"),
    ] {
        match h.backend() {
            leash::Backend::Portable => {
                task.assert_denied(
                    Action::Exec,
                    Reason::ScriptNotGranted,
                    exec_denied(h.backend()),
                    || task.probe(&format!("exec {path}")),
                );
            }
            leash::Backend::Lsm => {
                assert_eq!(task.probe(&format!("exec {path}")), "exit 0", "{path}");
            }
        }
    }
}
