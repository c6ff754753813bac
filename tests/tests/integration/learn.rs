//! The learn round trip on a real workload: a `#!/usr/bin/env bash` script that runs
//! coreutils, Python opening a socket and git committing to a repository. Learned once,
//! it runs enforced with exactly the grants `leash run --learn` printed and is refused
//! nothing a grant would fix; without any one of them it is refused that one.
//!
//! The workload runs on a fixed `PATH`, so it is the same workload wherever the suite
//! runs (a `PATH` with pyenv's shims in front runs ten more programs, and a Python
//! whose glibc probes nscd's socket).

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf};

use harness::{
    Listeners,
    daemon::{DaemonGuard, stderr},
};

/// The programs the workload needs, each its own file (the VM's guest has busybox, one
/// file for every applet, where no single grant can be told apart).
fn tools() -> Result<(), String> {
    for tool in ["bash", "python3", "git", "ls", "cat", "env"] {
        let found: Option<PathBuf> = std::env::split_paths(WORK_PATH)
            .map(|d| d.join(tool))
            .find(|p| p.is_file());
        let Some(found) = found else {
            return Err(format!("no {tool} on PATH"));
        };
        let real = std::fs::canonicalize(&found).unwrap_or(found);
        if real.file_name().is_some_and(|n| n == "busybox") {
            return Err(format!("{tool} is busybox"));
        }
    }
    Ok(())
}

/// The `PATH` the workload runs on.
const WORK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

const SCRIPT: &str = r#"#!/usr/bin/env bash
set -e
export PATH=/usr/local/bin:/usr/bin:/bin
ls / > /dev/null
cat /etc/hostname > /dev/null
python3 -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.close()' "$1"
repo="$(mktemp -d)"
git -C "$repo" init -q
git -C "$repo" -c user.email=a@example.test -c user.name=a commit -q --allow-empty -m work
git -C "$repo" log --oneline | wc -l
rm -rf "$repo"
"#;

#[test]
fn a_learned_workload_runs_enforced_with_its_grants_and_needs_each() {
    if let Err(why) = tools() {
        println!("skipped: {why}");
        return;
    }
    let d = DaemonGuard::start("learn", "");
    let l = Listeners::new();
    let script = d.workspace().join("work.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = script.display().to_string();
    let port = l.tcp4_port().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--files", "open", "--allow-exec", &script];
        args.extend(extra);
        args.extend(["--", "./work.sh", &port]);
        d.run(&args)
    };

    let learned = run(&["--learn"]);
    let report = stderr(&learned);
    assert!(learned.status.success(), "{report}");
    assert_eq!(String::from_utf8_lossy(&learned.stdout).trim(), "1");
    let all = report
        .lines()
        .find_map(|l| l.strip_prefix("leash: to grant it all: "))
        .unwrap_or_else(|| panic!("no grants in {report}"));
    let flags: Vec<&str> = all.split_whitespace().collect();
    println!("learned {} grants: {all}", flags.len() / 2);
    for want in [
        "/usr/bin/env",
        "/usr/bin/ls",
        &format!("127.0.0.1:{port}/tcp"),
    ] {
        assert!(flags.contains(&want), "{want} not in {all}");
    }

    // Probes glibc makes (nscd's socket) may be refused: the report marks them as
    // needing no grant. Nothing else may be.
    let mut enforced_args = vec!["--report"];
    enforced_args.extend(&flags);
    let enforced = run(&enforced_args);
    let report = stderr(&enforced);
    assert!(enforced.status.success(), "{report}");
    assert!(!report.contains("grant with:"), "{report}");
    for line in report.lines().filter(|l| l.starts_with("leash:   ")) {
        assert!(line.contains("no grant needed"), "{line} in {report}");
    }

    for i in (0..flags.len()).step_by(2) {
        let mut fewer = vec!["--report"];
        fewer.extend(
            flags
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i && *j != i + 1)
                .map(|(_, f)| *f),
        );
        let out = run(&fewer);
        let want = format!("grant with: {} {}", flags[i], flags[i + 1]);
        assert!(
            stderr(&out).contains(&want),
            "without {} {} the report has no \"{want}\": {}",
            flags[i],
            flags[i + 1],
            stderr(&out)
        );
    }
}
