//! File grants and file modes, enforced by the Landlock domain `leash run` applies to
//! itself before it execs the command (docs/grants.md, "files"): a real daemon, real
//! `leash run`, real opens on test-made files in a temp directory.

use std::path::{Path, PathBuf};

use harness::{
    daemon::{DaemonGuard, stderr, stdout},
    probe,
};

/// Landlock's errno for a refused file access.
const EACCES: &str = "errno 13";

/// Test-made files: a workspace, a data directory with an excluded secret, a home with
/// planted keys, another task's workspace and a file in a system-like place.
struct Tree(PathBuf);

impl Tree {
    fn new(tag: &str) -> Self {
        let root = std::env::temp_dir().join(format!("leash-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in [
            "ws",
            "data/sub",
            "home/.ssh",
            "home/.aws",
            "other-ws",
            "sys/etc",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for (file, text) in [
            ("ws/out", ""),
            ("data/a.txt", "a"),
            ("data/sub/b.txt", "b"),
            ("data/secret", "s3cret"),
            (
                "home/.ssh/id_ed25519",
                "-----BEGIN OPENSSH PRIVATE KEY-----",
            ),
            ("home/.aws/credentials", "[default]"),
            ("other-ws/notes", "other task"),
            ("sys/etc/ld.so.preload", ""),
        ] {
            std::fs::write(root.join(file), text).unwrap();
        }
        Self(std::fs::canonicalize(&root).unwrap())
    }

    fn path(&self, rel: &str) -> String {
        self.0.join(rel).display().to_string()
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.0.join(rel)).unwrap()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `leash run [flags] --allow-exec PROBE -- PROBE words...` in `cwd`.
fn run_in(d: &DaemonGuard, cwd: &Path, flags: &[&str], words: &[&str]) -> std::process::Output {
    let p = probe().display().to_string();
    d.cli()
        .current_dir(cwd)
        .arg("run")
        .args(flags)
        .args(["--allow-exec", &p, "--", &p])
        .args(words)
        .output()
        .expect("run leash")
}

/// Skips (with the reason printed) when the kernel has no Landlock.
fn landlock() -> bool {
    if leash::files::kernel_abi().is_none() {
        eprintln!("skipped: this kernel has no Landlock");
        return false;
    }
    true
}

#[test]
fn a_restricted_task_reads_and_writes_only_what_it_was_granted() {
    if !landlock() {
        return;
    }
    let t = Tree::new("restricted");
    let d = DaemonGuard::start(
        "files-restricted",
        // The config's list replaces the default one: keep /etc/shadow in it.
        &format!(
            "files:\n  exclude: [/etc/shadow, {}]\n",
            t.path("data/secret")
        ),
    );
    let flags = [
        "--files",
        "restricted",
        "--allow-read",
        &t.path("data"),
        "--allow-exec",
        "/bin/sh",
    ];
    let ws = t.0.join("ws");
    let probe_in = |words: &[&str]| {
        let o = run_in(&d, &ws, &flags, words);
        (stdout(&o), stderr(&o))
    };
    // The workspace: read and written; the granted data: read, the excluded secret's
    // siblings included.
    for (words, want) in [
        (vec!["open-read", "out"], "ok"),
        (vec!["open-write", "out", "after"], "ok"),
        (vec!["open-read", &t.path("data/a.txt")], "ok"),
        (vec!["open-read", &t.path("data/sub/b.txt")], "ok"),
        // The secret excluded inside the granted directory, planted keys in a home, and
        // another task's workspace: EACCES.
        (vec!["open-read", &t.path("data/secret")], EACCES),
        (vec!["open-read", &t.path("home/.ssh/id_ed25519")], EACCES),
        (vec!["open-read", &t.path("home/.aws/credentials")], EACCES),
        (vec!["open-read", &t.path("other-ws/notes")], EACCES),
        // Granted data is not writable.
        (vec!["open-write", &t.path("data/a.txt"), "x"], EACCES),
        // Granted binaries still exec (their loader and libraries are in the base set).
        (vec!["exec", "/bin/sh", "-c", "exit 0"], "exit 0"),
    ] {
        let (out, err) = probe_in(&words);
        assert_eq!(out, want, "{words:?}: {err}");
    }
    // The base read set has /etc, but not its secrets (where the system has them).
    for (file, want) in [("/etc/passwd", "ok"), ("/etc/shadow", EACCES)] {
        if Path::new(file).exists() {
            let (out, err) = probe_in(&["open-read", file]);
            assert_eq!(out, want, "{file}: {err}");
        }
    }
    assert_eq!(t.read("ws/out"), "after");
    assert_eq!(t.read("data/a.txt"), "a");
    // A build-like run: new files in the workspace and in TMPDIR, the private tmp dir.
    let o = d
        .cli()
        .current_dir(&ws)
        .args(["run", "--files", "restricted", "--allow-exec", "/bin/sh", "--"])
        .args([
            "/bin/sh",
            "-c",
            r#"echo built > new && echo tmp > "$TMPDIR/t" && read v < "$TMPDIR/t" && echo "$v $TMPDIR""#,
        ])
        .output()
        .unwrap();
    let out = stdout(&o);
    let (v, tmpdir) = out.split_once(' ').unwrap_or_default();
    assert_eq!(v, "tmp", "{}", stderr(&o));
    assert!(tmpdir.contains("/leash-"), "{tmpdir}");
    assert_eq!(t.read("ws/new"), "built\n");
    // The daemon removes the tmp directory when the task ends with its command.
    harness::wait_for("the task's tmp directory to go", || {
        !Path::new(tmpdir).exists()
    });
}

#[test]
fn the_default_writes_mode_keeps_writes_in_the_workspace() {
    if !landlock() {
        return;
    }
    let t = Tree::new("writes");
    let d = DaemonGuard::start("files-writes", "");
    let ws = t.0.join("ws");
    let preload = t.path("sys/etc/ld.so.preload");
    // Reads are open; writes outside the workspace are refused and change nothing.
    for (words, want) in [
        (vec!["open-read", &t.path("data/a.txt")], "ok"),
        (vec!["open-read", &t.path("home/.ssh/id_ed25519")], "ok"),
        (vec!["open-write", "out", "after"], "ok"),
        (vec!["open-write", &preload, "/tmp/evil.so"], EACCES),
        (vec!["open-write", &t.path("other-ws/notes"), "x"], EACCES),
        (vec!["unlink", &t.path("other-ws/notes")], EACCES),
    ] {
        let o = run_in(&d, &ws, &[], &words);
        assert_eq!(stdout(&o), want, "{words:?}: {}", stderr(&o));
    }
    assert_eq!(t.read("ws/out"), "after");
    assert_eq!(t.read("sys/etc/ld.so.preload"), "");
    assert_eq!(t.read("other-ws/notes"), "other task");
    // The task's record says how it is enforced.
    let o = d.run(&["task", "list", "--json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let task = tasks.as_array().unwrap().last().unwrap();
    assert_eq!(task["files"]["mode"], "writes", "{task}");
    let how = task["file_enforcement"].as_str().unwrap();
    assert!(how.contains("attach API get no domain"), "{how}");

    // `open` writes anywhere, as before.
    let o = run_in(
        &d,
        &ws,
        &["--files", "open"],
        &["open-write", &preload, "x"],
    );
    assert_eq!(stdout(&o), "ok", "{}", stderr(&o));
    assert_eq!(t.read("sys/etc/ld.so.preload"), "x");

    // `/` and system directories are refused as a workspace, naming --workspace.
    // (Those the system has: the VM's initramfs has no /usr/lib.)
    for cwd in ["/", "/etc", "/usr/lib"] {
        if !Path::new(cwd).is_dir() {
            continue;
        }
        let o = run_in(&d, Path::new(cwd), &[], &["pid"]);
        assert!(!o.status.success(), "{cwd}");
        assert!(stderr(&o).contains("--workspace DIR"), "{}", stderr(&o));
    }
    // ... unless one is named.
    let o = run_in(
        &d,
        Path::new("/"),
        &["--workspace", &t.path("ws")],
        &["open-write", &t.path("ws/out"), "named"],
    );
    assert_eq!(stdout(&o), "ok", "{}", stderr(&o));
}

/// Puts `kernel.core_pattern` back whatever happens.
struct CorePattern(String);

impl Drop for CorePattern {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/core_pattern", &self.0);
    }
}

#[test]
fn a_writes_task_cannot_write_core_pattern() {
    if !landlock() {
        return;
    }
    let path = "/proc/sys/kernel/core_pattern";
    let guard = CorePattern(std::fs::read_to_string(path).unwrap());
    let d = DaemonGuard::start("files-core", "");
    let o = run_in(
        &d,
        &d.workspace(),
        &[],
        &["open-write", path, "|/tmp/leash-test-handler %p"],
    );
    assert_eq!(stdout(&o), EACCES, "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(path).unwrap(), guard.0);
}

#[test]
fn bad_file_grants_and_runtime_file_grants_are_refused() {
    let d = DaemonGuard::start("files-api", "");
    let (status, body) = d.http(
        "POST",
        "/v1/tasks",
        br#"{"agent":"a","grants":{"files":["exec:/x"]}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("bad_grant") && body.contains("exec:/x"),
        "{body}"
    );
    let (status, body) = d.http(
        "POST",
        "/v1/tasks",
        br#"{"agent":"a","file_mode":"restricted","grants":{"files":["read:/usr","write:/tmp/x"]}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let task: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(task["files"]["mode"], "restricted");
    assert_eq!(task["files"]["read"][0], "/usr");
    assert_eq!(task["files"]["write"][0], "/tmp/x");
    let id = task["id"].as_str().unwrap();
    let (status, body) = d.http(
        "POST",
        &format!("/v1/tasks/{id}/grants"),
        br#"{"file":"read:/srv"}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("Landlock"), "{body}");
    let (status, body) = d.http("POST", "/v1/tasks", br#"{"agent":"a","file_mode":"all"}"#);
    assert_eq!(status, 400, "{body}");
}

#[test]
fn the_task_yaml_carries_the_file_mode_and_file_grants() {
    if !landlock() {
        return;
    }
    let t = Tree::new("yaml");
    let d = DaemonGuard::start("files-yaml", "");
    let ws = t.0.join("ws");
    let yaml = t.0.join("grants.yaml");
    std::fs::write(
        &yaml,
        format!(
            "exec: [/bin/sh]\nfiles:\n  - restricted\n  - read:{}\n  - write:{}\n",
            t.path("data"),
            t.path("other-ws")
        ),
    )
    .unwrap();
    let grants = ["--grants", yaml.to_str().unwrap()];
    // Restricted, as the file says: the data reads, the planted key does not; the
    // write grant writes.
    for (words, want) in [
        (vec!["open-read", &t.path("data/a.txt")], "ok"),
        (vec!["open-read", &t.path("home/.ssh/id_ed25519")], EACCES),
        (vec!["open-write", &t.path("other-ws/notes"), "yaml"], "ok"),
    ] {
        let o = run_in(&d, &ws, &grants, &words);
        assert_eq!(stdout(&o), want, "{words:?}: {}", stderr(&o));
    }
    // (The probe writes over the start of the file.)
    assert!(t.read("other-ws/notes").starts_with("yaml"));
    let o = d.run(&["task", "list", "--json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let task = tasks.as_array().unwrap().last().unwrap();
    assert_eq!(task["files"]["mode"], "restricted", "{task}");
    assert_eq!(task["files"]["read"][0], t.path("data"), "{task}");

    // `files: MODE` alone, and bad values: an error naming the entry, and no task.
    std::fs::write(&yaml, "files: open\n").unwrap();
    let o = run_in(
        &d,
        &ws,
        &grants,
        &["open-read", &t.path("home/.ssh/id_ed25519")],
    );
    assert_eq!(stdout(&o), "ok", "{}", stderr(&o));
    let before = tasks.as_array().unwrap().len() + 1;
    for (text, names) in [
        ("files: strict\n", "\"strict\" is neither a file mode"),
        ("files: [read:data]\n", "\"read:data\""),
        ("files: [restricted, open]\n", "two file modes"),
    ] {
        std::fs::write(&yaml, text).unwrap();
        let o = run_in(&d, &ws, &grants, &["pid"]);
        assert!(!o.status.success(), "{text}");
        let err = stderr(&o);
        assert!(
            err.contains("bad --grants file") && err.contains(names),
            "{text}: {err}"
        );
    }
    let o = d.run(&["task", "list", "--json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), before, "{tasks}");
}

#[test]
fn file_denials_are_file_events_and_counted_while_audit_is_on() {
    use harness::audit_log::{
        AUDIT_LANDLOCK_ACCESS, AUDIT_LANDLOCK_DOMAIN, AuditLog, AuditOn, field,
    };
    if leash::files::kernel_abi().is_none_or(|abi| abi < 7) {
        eprintln!("skipped: Landlock writes audit records from ABI 7 (Linux 6.15)");
        return;
    }
    // Audit is off on a host without auditd: on for this test only, then put back.
    let _on = AuditOn::new().expect("switch the kernel audit on");
    let t = Tree::new("audit");
    let d = DaemonGuard::start("files-audit", "");
    let log = AuditLog::open().expect("join the audit log's read-only group");
    let key = t.path("home/.ssh/id_ed25519");
    let creds = t.path("home/.aws/credentials");
    // An untagged process's own Landlock denial is nobody's task: not an event.
    let o = std::process::Command::new(probe())
        .args(["restricted-bench", &t.path("data"), "open", &creds, "1"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "error open errno 13", "{}", stderr(&o));
    let o = run_in(
        &d,
        &t.0.join("ws"),
        &["--files", "restricted", "--agent", "auditee"],
        &["open-read", &key],
    );
    assert_eq!(stdout(&o), EACCES, "{}", stderr(&o));

    // In the kernel's audit log: the denial of the command leash run exec'd (not of
    // leash run itself), with the path and the right, and its domain's record.
    let denied = |r: &(u16, String)| {
        r.0 == AUDIT_LANDLOCK_ACCESS
            && field(&r.1, "path") == Some(key.as_str())
            && field(&r.1, "blockers") == Some("fs.read_file")
    };
    let records = log.wait_for(std::time::Duration::from_secs(10), |rs| {
        rs.iter()
            .find(|r| denied(r))
            .and_then(|a| field(&a.1, "domain"))
            .is_some_and(|dom| {
                rs.iter().any(|r| {
                    r.0 == AUDIT_LANDLOCK_DOMAIN
                        && field(&r.1, "domain") == Some(dom)
                        && field(&r.1, "status") == Some("allocated")
                })
            })
    });
    let landlock: Vec<_> = records
        .iter()
        .filter(|r| matches!(r.0, AUDIT_LANDLOCK_ACCESS | AUDIT_LANDLOCK_DOMAIN))
        .collect();
    let access = records
        .iter()
        .find(|r| denied(r))
        .unwrap_or_else(|| panic!("no Landlock access record for {key}: {landlock:?}"));
    let domain = field(&access.1, "domain").unwrap();
    let alloc = records
        .iter()
        .find(|r| r.0 == AUDIT_LANDLOCK_DOMAIN && field(&r.1, "domain") == Some(domain))
        .unwrap_or_else(|| panic!("no domain record for {domain}: {landlock:?}"));
    // The domain's record names its creator: `leash run`, whose pid the command kept
    // (it execs in place) and which joined the task.
    let leash = harness::daemon::leash_bin().display().to_string();
    assert_eq!(field(&alloc.1, "exe"), Some(leash.as_str()), "{alloc:?}");
    let o = d.run(&["task", "list", "--json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let task = tasks.as_array().unwrap().last().unwrap();
    let pid: u64 = field(&alloc.1, "pid").unwrap().parse().unwrap();
    assert_eq!(task["attached_pids"][0], pid, "{alloc:?} {task}");

    // The daemon read it: a `file` event of the task, and the counter.
    let files = || -> Vec<serde_json::Value> {
        d.audit()
            .into_iter()
            .filter(|e| e["kind"] == "file")
            .collect()
    };
    harness::wait_for("the file event", || !files().is_empty());
    let events = files();
    assert_eq!(events.len(), 1, "only the task's denial: {events:?}");
    let e = &events[0];
    assert_eq!(
        (&e["task"], &e["agent"], &e["verdict"], &e["reason"]),
        (
            &task["id"],
            &serde_json::json!("auditee"),
            &serde_json::json!("denied"),
            &serde_json::json!("not_granted")
        ),
        "{e}"
    );
    assert_eq!(e["target"]["path"], key.as_str(), "{e}");
    assert_eq!(e["target"]["access"], "fs.read_file", "{e}");
    let (status, body) = d.metrics_get("/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.lines().any(|l| l.starts_with("leash_decisions_total{")
            && l.contains("action=\"file\"")
            && l.contains("verdict=\"denied\"")
            && l.contains("agent=\"auditee\"")
            && l.ends_with(" 1")),
        "{body}"
    );
}
