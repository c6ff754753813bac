//! Each built-in profile runs its tool's typical command enforced, with only the
//! profile and the workload's own grant, and is refused nothing. Skipped where the
//! tool is not installed from the distribution (the VM's busybox guest).

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

use harness::daemon::{DaemonGuard, stderr, stdout};

/// The distribution's programs only: a pyenv or nvm shim earlier on PATH is another
/// program than the profile's.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// `leash run --report --files open ARGS` with the distribution's PATH, in `dir`.
fn run(d: &DaemonGuard, dir: &Path, args: &[&str]) -> Output {
    d.cli()
        .env("PATH", PATH)
        .current_dir(dir)
        .args(["run", "--report", "--files", "open"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("leash run")
}

/// Succeeded and refused nothing.
fn clean(o: &Output) {
    let err = stderr(o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("refused"), "{err}");
}

/// Whether every program is installed (a real file, not busybox).
fn have(programs: &[&str]) -> bool {
    let missing: Vec<&&str> = programs
        .iter()
        .filter(|p| {
            std::fs::canonicalize(p).map_or(true, |real| {
                real.file_name().is_some_and(|n| n == "busybox")
            })
        })
        .collect();
    if !missing.is_empty() {
        println!("skipped: no {missing:?}");
    }
    missing.is_empty()
}

#[test]
fn shell_basics_runs_a_posix_script() {
    if !have(&[
        "/usr/bin/sh",
        "/usr/bin/sort",
        "/usr/bin/xargs",
        "/usr/bin/awk",
    ]) {
        return;
    }
    let d = DaemonGuard::start("profile-shell", "");
    let script = "n=$(ls / | sort | head -n 1 | wc -l); d=$(mktemp -d); touch \"$d/f\"; \
                  find \"$d\" -name f | xargs basename | tr a-z A-Z | sed s/F/ok/ | \
                  awk '{print $1}'; rm -rf \"$d\"; test \"$n\" -eq 1";
    let o = run(
        &d,
        &d.workspace(),
        &["--profile", "shell-basics", "--", "sh", "-c", script],
    );
    clean(&o);
    assert_eq!(stdout(&o), "ok");
    // Without it, the shell alone is refused the utilities.
    let o = run(
        &d,
        &d.workspace(),
        &["--allow-exec", "/usr/bin/sh", "--", "sh", "-c", script],
    );
    assert!(stderr(&o).contains("was refused"), "{}", stderr(&o));
}

#[test]
fn python3_and_glibc_base_resolve_a_name_with_ai_addrconfig() {
    if !have(&["/usr/bin/python3"]) {
        return;
    }
    let d = DaemonGuard::start("profile-python", "");
    let code = "import json, socket; \
                a = socket.getaddrinfo('localhost', 80, flags=socket.AI_ADDRCONFIG); \
                print(json.dumps(len(a) > 0))";
    let o = run(
        &d,
        &d.workspace(),
        &[
            "--profile",
            "python3",
            "--profile",
            "glibc-base",
            "--",
            "python3",
            "-c",
            code,
        ],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(stdout(&o), "true");
    // glibc's nscd probe is refused where no nscd runs, and told apart as harmless.
    assert!(
        err.lines()
            .filter(|l| l.contains("audited") || l.contains("denied"))
            .all(|l| l.contains("unix_socket_absent")),
        "{err}"
    );
    // Without glibc-base, getaddrinfo's netlink socket is refused.
    let o = run(
        &d,
        &d.workspace(),
        &["--profile", "python3", "--", "python3", "-c", code],
    );
    assert!(stderr(&o).contains("socket:netlink"), "{}", stderr(&o));
}

#[test]
fn pip_downloads_from_a_local_index() {
    if !have(&["/usr/bin/python3", "/usr/bin/pip3"]) {
        return;
    }
    let d = DaemonGuard::start("profile-pip", "");
    let index = d.workspace().join("index");
    std::fs::create_dir_all(index.join("simple/leashdemo")).unwrap();
    let made = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             w = zipfile.ZipFile(sys.argv[1] + '/leashdemo-1.0-py3-none-any.whl', 'w')\n\
             w.writestr('leashdemo/__init__.py', '')\n\
             w.writestr('leashdemo-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: leashdemo\\nVersion: 1.0\\n')\n\
             w.writestr('leashdemo-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
             w.writestr('leashdemo-1.0.dist-info/RECORD', '')\n\
             w.close()",
        )
        .arg(&index)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(
        index.join("simple/leashdemo/index.html"),
        "<a href=\"../../leashdemo-1.0-py3-none-any.whl\">leashdemo-1.0-py3-none-any.whl</a>\n",
    )
    .unwrap();
    let port = harness::daemon::free_port().to_string();
    let mut server = Command::new("/usr/bin/python3")
        .args([
            "-m",
            "http.server",
            &port,
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&index)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    harness::wait_for("the index to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok()
    });
    let out = d.workspace().join("out");
    let url = format!("http://127.0.0.1:{port}/simple/");
    let o = run(
        &d,
        &d.workspace(),
        &[
            "--profile",
            "pip",
            "--allow-connect",
            &format!("127.0.0.1:{port}/tcp"),
            "--",
            "pip3",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--index-url",
            &url,
            "-d",
            &out.display().to_string(),
            "leashdemo",
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
    clean(&o);
    assert!(
        out.join("leashdemo-1.0-py3-none-any.whl").exists(),
        "{}",
        stderr(&o)
    );
}

#[test]
fn git_commits_and_clones_over_its_helpers() {
    if !have(&["/usr/bin/sh"]) || !(have(&["/usr/bin/git"]) || have(&["/usr/local/bin/git"])) {
        return;
    }
    let d = DaemonGuard::start("profile-git", "");
    let w = d.workspace();
    let git = |args: &[&str]| {
        let mut all = vec!["--profile", "git", "--", "git"];
        all.extend(args);
        run(&d, &w, &all)
    };
    clean(&git(&["init", "-q", "origin"]));
    clean(&git(&[
        "-C",
        "origin",
        "-c",
        "user.email=a@example.test",
        "-c",
        "user.name=a",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "work",
    ]));
    // file:// runs git-upload-pack through the shell, as a remote would.
    let url = format!("file://{}/origin", w.display());
    clean(&git(&["clone", "-q", &url, "copy"]));
    let o = git(&["-C", "copy", "log", "--oneline"]);
    clean(&o);
    assert!(stdout(&o).ends_with("work"), "{}", stdout(&o));
}

#[test]
fn node_and_npm_start() {
    if !have(&["/usr/bin/node", "/usr/bin/npm"]) {
        return;
    }
    let d = DaemonGuard::start("profile-node", "");
    let o = run(
        &d,
        &d.workspace(),
        &[
            "--profile",
            "node",
            "--",
            "node",
            "-e",
            "console.log(require('os').platform())",
        ],
    );
    clean(&o);
    assert_eq!(stdout(&o), "linux");
    let o = run(
        &d,
        &d.workspace(),
        &["--profile", "node", "--", "npm", "--version"],
    );
    clean(&o);
    assert!(!stdout(&o).is_empty());
}

#[test]
fn a_profile_is_listed_shown_and_a_bad_name_is_a_clear_error() {
    let d = DaemonGuard::start("profile-cli", "");
    let o = d.run(&["profile", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for name in [
        "git",
        "glibc-base",
        "node",
        "pip",
        "python3",
        "shell-basics",
    ] {
        assert!(
            stdout(&o).lines().any(|l| l.starts_with(name)),
            "{}",
            stdout(&o)
        );
    }
    let o = d.run(&["profile", "show", "glibc-base"]);
    assert!(stdout(&o).contains("socket:netlink"), "{}", stdout(&o));
    let o = d.run(&["run", "--profile", "nope", "--", "/bin/true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no profile nope"), "{}", stderr(&o));
}
