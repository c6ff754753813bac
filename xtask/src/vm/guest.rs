//! What goes into the guest: the host packages the run needs, the static (musl) build of
//! leash and the test binaries, and the initramfs they are packed into.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use super::initramfs::{self, Entry};
use super::{ETC, GUEST_DIR, MUSL, NOT_BUSYBOX};
use crate::util;

/// Debian packages the VM run needs: qemu, and musl-gcc for the C parts of the static
/// build (`psm`, via cedar-policy's `stacker`).
const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("musl-gcc", "musl-tools"),
];

pub(super) fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = VM_PACKAGES
        .iter()
        .filter(|(tool, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !util::is_root()? {
        bail!("not installed: sudo apt-get install {}", missing.join(" "));
    }
    eprintln!("vm: installing {}", missing.join(", "));
    // The package lists may be stale or absent: update once, only when needed.
    if util::apt_install(&missing).is_err() {
        util::apt_update()?;
        util::apt_install(&missing)?;
    }
    Ok(())
}

pub(super) fn ensure_musl_target() -> anyhow::Result<()> {
    let installed = util::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == MUSL) {
        return Ok(());
    }
    util::run(Command::new("rustup").args(["target", "add", MUSL]))
}

/// The static binaries the guest runs.
pub(super) struct Binaries {
    /// Integration test binaries by target name (`integration`: one binary, a module per area).
    pub(super) tests: Vec<(String, PathBuf)>,
    probe: PathBuf,
    /// `leash-spiffe-probe`: a stock SPIFFE client, for the Workload API tests.
    spiffe_probe: PathBuf,
    leash: PathBuf,
}

/// Builds the integration tests, `leash-probe`, `leash-spiffe-probe` and `leash` for musl in their own target
/// dir (so the main one stays free). Release: under TCG every instruction counts, and an
/// unoptimised build took three times as long to load the programs (BTF parsing).
pub(super) fn build(target_dir: &Path) -> anyhow::Result<Binaries> {
    let common = |cmd: &mut Command| {
        cmd.args(["--release", "--target", MUSL])
            // cc-rs looks for x86_64-linux-musl-gcc; Debian's musl-tools names it so.
            .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
            .arg("--target-dir")
            .arg(target_dir)
            .arg("--message-format=json-render-diagnostics");
    };
    let mut tests_cmd = util::cargo();
    tests_cmd.args(["test", "-p", "integration-tests", "--no-run", "--test", "*"]);
    common(&mut tests_cmd);
    let mut leash_cmd = util::cargo();
    leash_cmd.args(["build", "-p", "leash", "--bin", "leash"]);
    common(&mut leash_cmd);

    let mut tests = Vec::new();
    let (mut probe, mut spiffe_probe, mut leash) = (None, None, None);
    for cmd in [&mut tests_cmd, &mut leash_cmd] {
        for (kinds, name, exe) in artifacts(cmd)? {
            if kinds.iter().any(|k| k == "test") {
                tests.push((name, exe));
            } else if name == "leash-probe" {
                probe = Some(exe);
            } else if name == "leash-spiffe-probe" {
                spiffe_probe = Some(exe);
            } else if name == "leash" {
                leash = Some(exe);
            }
        }
    }
    tests.sort();
    if tests.is_empty() {
        bail!("cargo built no integration test binary of integration-tests");
    }
    Ok(Binaries {
        tests,
        probe: probe.context("cargo built no leash-probe")?,
        spiffe_probe: spiffe_probe.context("cargo built no leash-spiffe-probe")?,
        leash: leash.context("cargo built no leash")?,
    })
}

/// Runs a cargo build with JSON messages; returns (target kinds, target name, executable)
/// of every executable it produced. Diagnostics go to stderr as usual.
fn artifacts(cmd: &mut Command) -> anyhow::Result<Vec<(Vec<String>, String, PathBuf)>> {
    let line = util::display(cmd);
    eprintln!("$ {line}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("no stdout")?
        .read_to_string(&mut out)
        .context("reading cargo's messages")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    let mut found = Vec::new();
    for msg in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(msg) else {
            continue;
        };
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let kinds = v["target"]["kind"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let name = v["target"]["name"].as_str().unwrap_or_default().to_owned();
        found.push((kinds, name, PathBuf::from(exe)));
    }
    Ok(found)
}

/// Writes the initramfs: busybox, `/bin/true` and `/bin/false`, `/init`, and leash's
/// binaries under `/leash` (tests in `/leash/tests`).
pub(super) fn pack(out: &Path, bins: &Binaries, busybox: &Path) -> anyhow::Result<u64> {
    let init = util::workspace_root().join("tests").join("vm").join("init");
    let mut entries = vec![
        Entry::Dir("bin"),
        Entry::Dir("dev"),
        Entry::Dir("etc"),
        Entry::Dir("proc"),
        Entry::Dir("root"),
        Entry::Dir("run"),
        Entry::Dir("sys"),
        Entry::Dir("tmp"),
        Entry::Dir("var"),
        Entry::Dir(GUEST_DIR),
        Entry::Dir("leash/tests"),
        // The kernel opens /dev/console for /init before anything is mounted.
        Entry::CharDev {
            path: "dev/console",
            major: 5,
            minor: 1,
        },
        Entry::File {
            path: "init".into(),
            from: init,
            mode: 0o755,
        },
        Entry::File {
            path: "bin/busybox".into(),
            from: busybox.to_owned(),
            mode: 0o755,
        },
        Entry::Bytes {
            path: "bin/true".into(),
            data: initramfs::exit_elf(0),
            mode: 0o755,
        },
        Entry::Bytes {
            path: "bin/false".into(),
            data: initramfs::exit_elf(1),
            mode: 0o755,
        },
        Entry::File {
            path: format!("{GUEST_DIR}/leash"),
            from: bins.leash.clone(),
            mode: 0o755,
        },
        Entry::File {
            path: format!("{GUEST_DIR}/leash-probe"),
            from: bins.probe.clone(),
            mode: 0o755,
        },
        Entry::File {
            path: format!("{GUEST_DIR}/leash-spiffe-probe"),
            from: bins.spiffe_probe.clone(),
            mode: 0o755,
        },
    ];
    entries.extend(ETC.iter().map(|(path, text)| Entry::Bytes {
        path: (*path).to_owned(),
        data: text.as_bytes().to_vec(),
        mode: 0o644,
    }));
    // Every applet, so that tests can run `sh`, `mount`, `unshare` and the like.
    let applets = util::output(Command::new(busybox).arg("--list"))
        .with_context(|| format!("could not list the applets of {}", busybox.display()))?;
    entries.extend(
        applets
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && !a.contains('/') && !NOT_BUSYBOX.contains(a))
            .map(|applet| Entry::Symlink {
                path: format!("bin/{applet}"),
                target: "busybox".into(),
            }),
    );
    entries.extend(bins.tests.iter().map(|(name, exe)| Entry::File {
        path: format!("{GUEST_DIR}/tests/{name}"),
        from: exe.clone(),
        mode: 0o755,
    }));
    initramfs::write(out, &entries)
}
