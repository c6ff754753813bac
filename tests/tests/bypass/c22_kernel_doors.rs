//! Class 22, kernel doors: a tagged process, even root, may not load or unload a
//! module, load a kexec image or take raw I/O port access. Every call here is one the
//! kernel would refuse anyway (no module by that name, no ELF image, no kernel image,
//! an unknown kexec flag), so untagged calls are harmless and show the kernel's own
//! answer; I/O port access is granted to a probe process that does no I/O and exits.

use harness::{Harness, Scratch, refused, spec};
use leash::{backend::Backend, events::Target};

use super::untagged;

const KILLED: &str = "signal 9";

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
        ("delete-module leash_no_such_module".to_owned(), "delmod", KILLED),
        ("init-module".to_owned(), "initmod", denied),
        (format!("finit-module {file}"), "finitmod", denied),
        ("kexec-load".to_owned(), "kexec", denied),
        (format!("kexec-file-load {file}"), "kexecfil", denied),
        ("iopl 3".to_owned(), port("iopl"), denied),
        ("ioperm 128 1 1".to_owned(), port("ioperm"), denied),
    ];
    for (attempt, call, outcome) in &attempts {
        let ev = task.assert_denied("tamper", "kernel_door", outcome, || task.probe(attempt));
        assert_eq!(
            ev.target,
            Target::Guard {
                call: (*call).into(),
                target_pid: 0
            },
            "{attempt}"
        );
    }
    assert_eq!(untagged("delete-module leash_no_such_module"), "errno 2");
    for (attempt, _, _) in &attempts[1..] {
        let out = untagged(attempt);
        // Port access is the kernel's to give (lockdown refuses it on some hosts).
        let io = attempt.starts_with("io") && out == "ok";
        assert!(
            io || (out.starts_with("errno ") && out != "errno 38"),
            "untagged {attempt}: {out}"
        );
    }
}
