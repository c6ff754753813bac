//! Class 22, kernel doors: a tagged process, even root, may not load or unload a
//! module, load a kexec image or take raw I/O port access. Every call here is one the
//! kernel would refuse anyway (no module by that name, no ELF image, no kernel image,
//! an unknown kexec flag), so untagged calls are harmless and show the kernel's own
//! answer; I/O port access is granted to a probe process that does no I/O and exits.

use harness::{Action, Reason};
use harness::{Harness, Scratch, refused, spec};
use leash::{kernel::Backend, kernel::events::Target};

use super::untagged;

const KILLED: &str = "signal 9";
const ENOSYS: &str = "errno 38";

#[test]
fn module_kexec_and_io_port_calls_are_stopped() {
    let h = Harness::load();
    let s = Scratch::new("c22");
    let file = s.path("not-a-module");
    std::fs::write(&file, "neither a module nor a kernel image\n").unwrap();
    let task = h.task(spec(&[], &[]));
    let lsm = h.backend() == Backend::Lsm;
    let denied = refused(h.backend());
    // The lsm backend's locked_down hook sees the I/O port check, not which call made it.
    let port = |call: &'static str| if lsm { "ioport" } else { call };
    let attempts = [
        // No LSM hook for unloading: killed on both backends.
        (
            "delete-module leash_no_such_module".to_owned(),
            "delete_module",
            "delmod",
            KILLED,
        ),
        ("init-module".to_owned(), "init_module", "initmod", denied),
        (
            format!("finit-module {file}"),
            "finit_module",
            "finitmod",
            denied,
        ),
        ("kexec-load".to_owned(), "kexec_load", "kexec", denied),
        (
            format!("kexec-file-load {file}"),
            "kexec_file_load",
            "kexecfil",
            denied,
        ),
        ("iopl 3".to_owned(), "iopl", port("iopl"), denied),
        (
            "ioperm 128 1 1".to_owned(),
            "ioperm",
            port("ioperm"),
            denied,
        ),
    ];
    let tracefs = leash::kernel::mounts::ensure_tracefs().unwrap();
    let mut guarded = 0;
    for (attempt, syscall, call, outcome) in &attempts {
        let kernel = untagged(attempt);
        let events = tracefs.join(format!("events/syscalls/sys_enter_{syscall}"));
        if !events.exists() {
            // A kernel built without modules or kexec: the call exists for no one.
            eprintln!("{attempt}: not in this kernel, nothing to guard");
            assert_eq!(kernel, ENOSYS, "{attempt}");
            assert_eq!(task.probe(attempt), ENOSYS, "{attempt}");
            continue;
        }
        // Untagged: the kernel's own answer, never a kill. Port access is the kernel's
        // to give (lockdown refuses it on some hosts); nothing else is ever loaded.
        let io = attempt.starts_with("io") && kernel == "ok";
        assert!(
            io || kernel.starts_with("errno "),
            "untagged {attempt}: {kernel}"
        );
        let ev = task.assert_denied(Action::Tamper, Reason::GuardKernel, outcome, || {
            task.probe(attempt)
        });
        assert_eq!(
            ev.target,
            Target::Guard {
                call: (*call).into(),
                target_pid: 0
            },
            "{attempt}"
        );
        guarded += 1;
    }
    assert!(guarded >= 2, "iopl and ioperm at least");
}
