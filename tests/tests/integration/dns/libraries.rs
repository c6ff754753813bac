//! Resolution as programs do it, through the C libraries' `getaddrinfo`: glibc (the
//! probe on the host, Python) and musl (the probe in the VM guest, and its static musl
//! build on the host when `cargo xtask vm` has made one). Each reads the pod's
//! `resolv.conf` through its root, and its DNS reaches the responder.

use std::path::{Path, PathBuf};

use harness::{EPERM, daemon::DaemonGuard, probe};

use super::{
    REFUSED,
    pod::{BIG, Pod},
};

/// The static musl build of the probe, if one exists: the VM's build, or a plain
/// `--target x86_64-unknown-linux-musl` one.
fn musl_probe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/integration-…
    let target = exe.parent()?.parent()?.parent()?;
    [
        "vm/musl/x86_64-unknown-linux-musl/release",
        "x86_64-unknown-linux-musl/release",
        "x86_64-unknown-linux-musl/debug",
    ]
    .into_iter()
    .map(|dir| target.join(dir).join("leash-probe"))
    .find(|p| p.exists())
}

/// The most addresses musl's getaddrinfo returns (its `MAXADDRS`): more than a 512-byte
/// UDP answer holds, so getting them all proves its retry over TCP.
const MUSL_MAX: usize = 48;

/// Python's `socket.getaddrinfo` (glibc), then a connect to what it got: one line.
const PYTHON: &str = "import socket, sys
try:
    ips = sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 443, socket.AF_INET)})
except socket.gaierror as e:
    print('error', e.errno); sys.exit()
s = socket.socket()
try:
    s.connect((ips[0], 443)); r = 'ok'
except OSError as e:
    r = 'errno %d' % e.errno
print('answer', ','.join(ips), r)";

#[test]
fn the_c_libraries_resolve_through_leash() {
    let pod = Pod::new("libc");
    let d = DaemonGuard::start("dns-libc", "");
    let musl = if cfg!(target_env = "musl") {
        None
    } else {
        musl_probe()
    };
    let python = Path::new("/usr/bin/python3")
        .canonicalize()
        .ok()
        .filter(|p| p.exists());
    let mut exec = vec![probe()];
    exec.extend(musl.iter().cloned());
    exec.extend(python.iter().cloned());
    let exec: Vec<String> = exec.iter().map(|p| p.display().to_string()).collect();
    let id = create_with_exec(
        &d,
        &exec,
        &[
            "granted.test:443/tcp",
            // No `socket:netlink`: glibc's getaddrinfo reads the interfaces' addresses
            // over route netlink to sort an answer of several addresses (RFC 6724), and
            // a name grant implies that socket alone.
            "big.test:443/tcp",
        ],
    );

    // The probe's `resolve` is getaddrinfo of the C library it was built with.
    let libc = if cfg!(target_env = "musl") {
        "musl (static)"
    } else {
        "glibc"
    };
    let mut s = pod.join(&d, &id);
    assert_eq!(s.run("resolve granted.test"), "answer 10.77.0.1", "{libc}");
    assert_eq!(s.run("connect tcp 10.77.0.1 443"), REFUSED, "{libc}");
    assert!(s.run("resolve denied.test").starts_with("error"), "{libc}");
    assert_eq!(s.run("connect tcp 10.77.0.2 443"), EPERM, "{libc}");
    // An answer truncated over UDP: the library retries over TCP, through leash too.
    // An answer truncated over UDP: the library retries over TCP, through leash too.
    let big = s.run("resolve big.test");
    let whole = if cfg!(target_env = "musl") {
        MUSL_MAX
    } else {
        usize::from(BIG)
    };
    assert_eq!(big.split(',').count(), whole, "{libc}: {big}");
    drop(s);

    match &musl {
        Some(bin) => {
            let mut m = pod.join_with(&d, &id, bin);
            assert_eq!(m.run("resolve granted.test"), "answer 10.77.0.1", "musl");
            assert!(m.run("resolve denied.test").starts_with("error"), "musl");
            let big = m.run("resolve big.test");
            assert_eq!(big.split(',').count(), MUSL_MAX, "musl: {big}");
        }
        None if cfg!(target_env = "musl") => {}
        None => {
            println!(
                "skipped musl: no static musl build of leash-probe (cargo xtask vm makes one)"
            );
        }
    }

    match &python {
        Some(py) => {
            let py = py.display().to_string();
            assert_eq!(
                pod.run_once(&d, &id, &[&py, "-c", PYTHON, "granted.test"]),
                "answer 10.77.0.1 errno 111",
                "python"
            );
            let denied = pod.run_once(&d, &id, &[&py, "-c", PYTHON, "denied.test"]);
            assert!(denied.starts_with("error"), "python: {denied}");
        }
        None => println!("skipped python: no /usr/bin/python3 here"),
    }
}

fn create_with_exec(d: &DaemonGuard, exec: &[String], connect: &[&str]) -> String {
    let mut args = vec!["task", "create"];
    for e in exec {
        args.extend(["--allow-exec", e]);
    }
    for c in connect {
        args.extend(["--allow-connect", c]);
    }
    let o = d.run(&args);
    assert!(o.status.success(), "{}", harness::daemon::stderr(&o));
    harness::daemon::stdout(&o)
}
