//! `leash run`'s denial report: once the command exits, each distinct refusal with the
//! grant that allows it. The grants it names are applied and the run repeated: nothing is
//! refused then, so the report named the right files (an interpreter, not its script).

use std::{
    io::{BufRead as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    process::{Output, Stdio},
};

use harness::{
    EPERM, Harness, Listeners, Scratch,
    daemon::{DaemonGuard, stderr},
    exec_denied, probe,
};

/// Runs the probe under `leash run ARGS`, feeding it `commands`; returns its output.
fn run_probe(d: &DaemonGuard, args: &[String], commands: &[String]) -> Output {
    run_probe_until(d, args, commands, || true)
}

/// [`run_probe`], keeping the probe alive (its stdin open) until `done` holds.
fn run_probe_until(
    d: &DaemonGuard,
    args: &[String],
    commands: &[String],
    mut done: impl FnMut() -> bool,
) -> Output {
    let p = probe().display().to_string();
    let mut child = d
        .cli()
        .arg("run")
        .args(args)
        .args(["--files", "open", "--allow-exec", &p, "--", &p])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("leash run");
    let mut stdin = child.stdin.take().unwrap();
    for c in commands {
        writeln!(stdin, "{c}").unwrap();
    }
    stdin.flush().unwrap();
    harness::wait_for("the probe's refusals recorded", &mut done);
    drop(stdin);
    // Read to the end of stderr: the reporter holds it until its report is out.
    child.wait_with_output().unwrap()
}

/// The `--allow-...` flags the report's "grant with:" hints name.
fn suggested(report: &str) -> Vec<String> {
    report
        .lines()
        .filter_map(|l| l.split_once("; grant with: ").map(|(_, g)| g))
        .flat_map(|g| {
            let (flag, spec) = g.split_once(' ').expect("FLAG SPEC");
            [flag.to_owned(), spec.to_owned()]
        })
        .collect()
}

#[test]
fn the_report_names_each_refusal_and_its_grants_allow_the_rerun() {
    let d = DaemonGuard::start("report", "");
    let backend = Harness::backend_of_daemon(&d);
    let (l, other) = (Listeners::new(), Listeners::new());
    let s = Scratch::new("report");
    let interp = s.copy_true("interp");
    let script = s.path("script.sh");
    std::fs::write(&script, format!("#!{interp}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let denied_connect = format!("connect tcp 127.0.0.1 {}", other.tcp4_port());
    let commands = [
        format!("connect tcp 127.0.0.1 {}", l.tcp4_port()),
        denied_connect.clone(),
        denied_connect,
        format!("exec {script}"),
    ];
    let base: Vec<String> = [
        "--agent",
        "reported",
        "--allow-connect",
        &format!("127.0.0.1:{}/tcp", l.tcp4_port()),
        "--allow-exec",
        &script,
    ]
    .map(str::to_owned)
    .to_vec();

    // Not on a terminal, and no --report: no report.
    let quiet = run_probe(&d, &base, &commands);
    assert!(!stderr(&quiet).contains("refused"), "{}", stderr(&quiet));

    let mut args = base.clone();
    args.push("--report".into());
    let out = run_probe(&d, &args, &commands);
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    let want = ["ok", EPERM, EPERM, exec_denied(backend)].join("\n") + "\n";
    assert_eq!(got, want);
    let report = stderr(&out);
    println!("{report}");
    assert!(
        report.contains("was refused 2 distinct actions"),
        "{report}"
    );
    let connect = format!("--allow-connect 127.0.0.1:{}/tcp", other.tcp4_port());
    assert!(
        report
            .lines()
            .any(|l| l.contains("(2×)") && l.ends_with(&format!("grant with: {connect}"))),
        "{report}"
    );
    // The interpreter is named, not the script, which is granted.
    assert!(
        report.lines().any(
            |l| l.contains(&format!("exec {interp} (the interpreter of {script})"))
                && l.contains("reason=interpreter_not_granted")
                && l.ends_with(&format!("grant with: --allow-exec {interp}"))
        ),
        "{report}"
    );

    // Exactly the suggested grants added: nothing refused, nothing reported.
    let extra = suggested(&report);
    assert_eq!(extra.len(), 4, "{report}");
    args.extend(extra);
    let again = run_probe(&d, &args, &commands);
    let got = String::from_utf8_lossy(&again.stdout).into_owned();
    assert_eq!(got, "ok\nok\nok\nexit 0\n", "{}", stderr(&again));
    assert!(!stderr(&again).contains("refused"), "{}", stderr(&again));
}

/// A TTL that runs out while the command runs is said at its exit, with the refusals
/// after it.
#[test]
fn a_ttl_that_ran_out_during_the_run_is_reported() {
    let d = DaemonGuard::start("report-ttl", "");
    let l = Listeners::new();
    let p = probe().display().to_string();
    // Long enough for `leash run` to start under TCG (the VM suite); the test waits it out.
    let mut child = d
        .cli()
        .args(["run", "--report", "--agent", "report-ttl", "--ttl", "8s"])
        .args(["--files", "open"])
        .args([
            "--allow-connect",
            &format!("127.0.0.1:{}/tcp", l.tcp4_port()),
        ])
        .args(["--allow-exec", &p, "--", &p])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("leash run");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    writeln!(stdin, "pid").unwrap();
    stdout.read_line(&mut line).unwrap();
    assert!(line.trim().parse::<u32>().is_ok(), "{line:?}");
    harness::wait_for("the TTL to run out", || {
        let o = d.run(&["task", "list", "--json", "--agent", "report-ttl"]);
        let tasks: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        tasks[0]["state"] == "ended"
    });
    writeln!(stdin, "connect tcp 127.0.0.1 {}", l.tcp4_port()).unwrap();
    drop(stdin);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), EPERM);
    let out = child.wait_with_output().unwrap();
    let report = stderr(&out);
    assert!(report.contains("TTL ran out during the run"), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.contains("reason=task_expired") && l.contains("--ttl")),
        "{report}"
    );
}

/// A connect to a unix path with no socket behind it (glibc's nscd probe) is refused
/// with its own reason and the report says no grant is needed; a socket that is there
/// keeps `not_granted`.
#[test]
fn a_unix_path_with_no_socket_is_told_apart() {
    let d = DaemonGuard::start("report-absent", "");
    let s = Scratch::new("report-absent");
    let present = s.path("present.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&present).unwrap();
    let absent = s.path("absent.sock");
    let args = ["--report".to_owned()];
    let commands = [
        format!("unix-connect {absent}"),
        format!("unix-connect {present}"),
    ];
    // The daemon tells an absent socket apart by looking through the process's root,
    // so the probe stays alive until the later refusal is recorded (events are read in
    // order): a probe that exited first left only `not_granted` to say.
    let out = run_probe_until(&d, &args, &commands, || {
        d.audit()
            .iter()
            .any(|e| e["target"]["unix"] == present.as_str())
    });
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = stderr(&out);
    let outcomes: Vec<&str> = got.lines().collect();
    // EPERM from the lsm or cgroup unix hooks, a SIGKILL from the syscall tracepoints.
    assert!(outcomes.len() == 2 && outcomes[1] != "ok", "{got}");
    assert!(
        report
            .lines()
            .any(|l| l.contains(&present) && l.contains("reason=not_granted")),
        "{report}"
    );
    if got.starts_with("errno 2") {
        // The portable syscall tracepoints decide after the lookup failed and let the
        // call be: no refusal to report.
        assert!(!report.contains(&absent), "{report}");
    } else {
        assert!(
            report.lines().any(|l| l.contains(&absent)
                && l.contains("reason=unix_socket_absent")
                && l.contains("no grant needed")),
            "{report}"
        );
    }
}

/// `leash run ./s.sh` matches a grant of the script's absolute path (the path it execs
/// is cleaned, as the kernel compares it), and an ungranted `#!` interpreter is named
/// before the run.
#[test]
fn a_script_by_a_relative_path_runs_and_its_interpreter_is_checked_first() {
    let d = DaemonGuard::start("report-script", "");
    let s = Scratch::new("report-script");
    let interp = s.copy_true("interp");
    let script = d.workspace().join("s.sh");
    std::fs::write(&script, format!("#!{interp}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = script.display().to_string();
    let run = |grants: &[&str]| {
        let mut args = vec!["run", "--files", "open"];
        for g in grants {
            args.extend(["--allow-exec", g]);
        }
        args.extend(["--", "./s.sh"]);
        d.run(&args)
    };
    let both = run(&[&script, &interp]);
    assert_eq!(both.status.code(), Some(0), "{}", stderr(&both));
    assert!(!stderr(&both).contains("warning"), "{}", stderr(&both));

    let only_script = run(&[&script]);
    assert_ne!(only_script.status.code(), Some(0));
    let err = stderr(&only_script);
    assert!(
        err.contains(&format!(
            "{script} is a script run by {interp}, which is not in the task's exec grants"
        )) && err.contains(&format!("add --allow-exec {interp}")),
        "{err}"
    );
}

/// `leash run` with a `DIR/**` grant says the task may run what it writes below DIR,
/// and takes a command below DIR for granted (no "not in the task's exec grants").
#[test]
fn a_tree_grant_is_announced_and_covers_the_command() {
    let d = DaemonGuard::start("report-tree", "");
    let tree = d.workspace().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    let tool = tree.join("bin/tool");
    std::fs::copy("/bin/true", &tool).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let grant = format!("{}/**", tree.display());
    let out = d.run(&[
        "run",
        "--files",
        "open",
        "--allow-exec",
        &grant,
        "--",
        &tool.display().to_string(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "the task may run any file below {} (--allow-exec {grant}), including what it writes there",
            tree.display()
        )),
        "{err}"
    );
    assert!(!err.contains("not in the task's exec grants"), "{err}");
}

/// `leash run --learn` records without refusing and ends with the grants; run enforced
/// with exactly those (`leash suggest` gives the same), nothing is refused, and without
/// any one of them the run fails: the set is complete and minimal.
#[test]
fn learned_grants_run_the_workload_and_each_is_needed() {
    let d = DaemonGuard::start("report-learn", "");
    let l = Listeners::new();
    let s = Scratch::new("report-learn");
    let interp = s.copy_true("interp");
    let script = s.path("script.sh");
    std::fs::write(&script, format!("#!{interp}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let commands = [
        format!("connect tcp 127.0.0.1 {}", l.tcp4_port()),
        format!("exec {script}"),
    ];
    let success = "ok\nexit 0\n";

    let learned = run_probe(&d, &["--learn".to_owned()], &commands);
    assert_eq!(String::from_utf8_lossy(&learned.stdout), success);
    let report = stderr(&learned);
    println!("{report}");
    assert!(report.contains("would have been refused"), "{report}");
    let id = report
        .lines()
        .find_map(|l| l.strip_prefix("leash: task "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no task id in {report}"));
    let all = report
        .lines()
        .find_map(|l| l.strip_prefix("leash: to grant it all: "))
        .unwrap_or_else(|| panic!("no grants in {report}"));
    let suggest = d.run(&["suggest", "--task", id]);
    assert!(suggest.status.success(), "{}", stderr(&suggest));
    assert_eq!(
        String::from_utf8_lossy(&suggest.stdout).lines().last(),
        Some(all)
    );
    let flags: Vec<String> = all.split_whitespace().map(str::to_owned).collect();
    assert_eq!(flags.len(), 6, "{all}");

    let enforced = run_probe(&d, &flags, &commands);
    assert_eq!(
        String::from_utf8_lossy(&enforced.stdout),
        success,
        "{}",
        stderr(&enforced)
    );
    for i in (0..flags.len()).step_by(2) {
        let mut fewer = flags.clone();
        fewer.drain(i..i + 2);
        let out = run_probe(&d, &fewer, &commands);
        assert_ne!(
            String::from_utf8_lossy(&out.stdout),
            success,
            "without {} {}",
            flags[i],
            flags[i + 1]
        );
    }
}

/// A daemon slow to record the kernel's decisions (each batch held back 2.5 s, longer
/// than the sweep takes to see the command gone and end the task) still reports every
/// refusal: the reporter asks the daemon to drain the kernel's queue first, instead of
/// trusting two reads that agree.
#[test]
fn a_daemon_slow_to_record_decisions_still_reports_every_refusal() {
    let d = DaemonGuard::start_with(
        "report-slow",
        "",
        &[(leash::daemon::fault::DELAY_EVENTS_MS, "2500")],
        true,
    );
    let (a, b, c) = (Listeners::new(), Listeners::new(), Listeners::new());
    let commands: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|l| format!("connect tcp 127.0.0.1 {}", l.tcp4_port()))
        .collect();
    let out = run_probe(&d, &["--report".to_owned()], &commands);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        [EPERM, EPERM, EPERM].join("\n") + "\n"
    );
    let report = stderr(&out);
    assert!(
        report.contains("was refused 3 distinct actions"),
        "{report}"
    );
}

/// The absent socket told apart although the probe has exited before the daemon reads
/// its refusal (each batch of decisions held back): the daemon looks the path up in
/// the root the task's process had at attach.
#[test]
fn an_absent_socket_is_told_apart_after_the_process_is_gone() {
    let d = DaemonGuard::start_with(
        "report-absent-late",
        "",
        &[(leash::daemon::fault::DELAY_EVENTS_MS, "1500")],
        true,
    );
    let s = Scratch::new("report-absent-late");
    let absent = s.path("absent.sock");
    let out = run_probe(
        &d,
        &["--report".to_owned()],
        &[format!("unix-connect {absent}")],
    );
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = stderr(&out);
    if got.starts_with("errno 2") {
        // The portable syscall tracepoints let a failed lookup be: nothing to report.
        assert!(!report.contains(&absent), "{report}");
        return;
    }
    assert!(
        report
            .lines()
            .any(|l| l.contains(&absent) && l.contains("reason=unix_socket_absent")),
        "{report}"
    );
}
