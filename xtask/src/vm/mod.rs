//! `cargo xtask vm [--kernel 6.1] [--backend lsm|portable|both] [-- TEST_FILTER...]`:
//! runs the privileged integration tests on another kernel, in qemu, once per backend.
//!
//! As in aya's xtask: the test binaries are built statically (musl), packed with a static
//! busybox and a small `/init` (`tests/vm/init`) into an initramfs, and the kernel boots
//! with `lsm=…,bpf` and the backend and test filters on its command line. The guest runs
//! every integration test binary with `LEASH_TEST_BACKEND` set and prints exactly one
//! `leash-vm: success` or `leash-vm: failure …` line; this reads it, and the test counts,
//! from the console. A panic, a hang or a missing line is a failure, reported with the
//! console's tail.
//!
//! Everything fetched or built is cached under `target/vm/`: the kernel and busybox
//! packages (`kernels/`, `debs/`), the musl build (`musl/`), and whether KVM works here.

mod boot;
mod debian;
mod guest;
mod initramfs;
mod qemu;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::ValueEnum;

use crate::setup;
use crate::util::{self, Counts};
use guest::{build, ensure_musl_target, ensure_packages, pack};
use qemu::{Accel, End};

const MUSL: &str = "x86_64-unknown-linux-musl";

/// Where the guest keeps leash's binaries; the tests find `leash` and `leash-probe` in
/// the parent folder of their own.
const GUEST_DIR: &str = "leash";

/// Busybox applets that the guest does not link to busybox: the tests copy `/bin/true`
/// under new names, and busybox would not know those names, so `/bin/true` and
/// `/bin/false` are small programs of their own ([`initramfs::exit_elf`]).
/// (`busybox` itself is in its own list.)
const NOT_BUSYBOX: &[&str] = &["true", "false", "busybox"];

/// Tests that cannot run in the guest, and why; the guest passes `--skip NAME` for each.
/// They test no kernel behaviour, and run in the host suite.
const GUEST_SKIPS: &[(&str, &str)] = &[
    (
        "exposition_passes_promtool",
        "runs the host's promtool (a dynamic binary)",
    ),
    (
        "the_daemon_accepts_the_kubernetes_config",
        "reads deploy/ from the source tree",
    ),
];

/// `/etc` of the guest: `localhost` must resolve (grants may name hosts), and
/// `/etc/resolv.conf` must exist for the `dns` tests to bind their pod's file over it (it
/// names no server: the guest has no network).
const ETC: &[(&str, &str)] = &[
    (
        "etc/hosts",
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    ),
    ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
    ("etc/group", "root:x:0:\n"),
    (
        "etc/resolv.conf",
        "# no resolver: the guest has no network\n",
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendArg {
    Lsm,
    Portable,
    /// `lsm`, then `portable`, each in its own boot.
    Both,
}

impl BackendArg {
    fn backends(self) -> &'static [&'static str] {
        match self {
            Self::Lsm => &["lsm"],
            Self::Portable => &["portable"],
            Self::Both => &["lsm", "portable"],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum AccelArg {
    /// KVM when `/dev/kvm` opens and KVM has not failed here before; TCG from the first
    /// boot that KVM does not bring to `/init` (remembered in `target/vm/kvm-unusable`).
    Auto,
    Kvm,
    Tcg,
}

pub(crate) struct Options {
    pub kernels: Vec<String>,
    pub backend: BackendArg,
    pub accel: AccelArg,
    pub timeout: Duration,
    pub memory_mb: u32,
    pub cpus: u32,
    pub filters: Vec<String>,
}

/// The outcome of one boot.
struct Run {
    kernel: String,
    backend: &'static str,
    counts: Counts,
    elapsed: Duration,
    failure: Option<String>,
}

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    for filter in &opts.filters {
        if filter.is_empty() || filter.contains(|c: char| c.is_whitespace() || c == '"') {
            bail!(
                "test filter {filter:?}: filters go on the guest's kernel command line, so \
                 they may not be empty or hold spaces or quotes"
            );
        }
    }
    let cache = util::target_dir().join("vm");
    fs::create_dir_all(&cache).with_context(|| format!("could not create {}", cache.display()))?;

    eprintln!("==> vm: setup");
    setup::run(setup::Mode::Implicit)?;
    ensure_packages()?;
    ensure_musl_target()?;
    util::require_bpf_linker()?;

    eprintln!("==> vm: kernels and busybox");
    let kernels = opts
        .kernels
        .iter()
        .map(|spec| debian::kernel(spec, &cache))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for k in &kernels {
        eprintln!(
            "vm: kernel {}: {} ({})",
            k.spec,
            k.vmlinuz.display(),
            k.source
        );
    }
    let busybox = debian::busybox(&cache)?;

    eprintln!("==> vm: build (static, {MUSL})");
    let build_started = Instant::now();
    let bins = build(&cache.join("musl"))?;
    let build_time = build_started.elapsed();

    let initrd = cache.join("initramfs.cpio");
    let size = pack(&initrd, &bins, &busybox)?;
    eprintln!(
        "vm: {} ({} MB, {} test binaries: {})",
        initrd.display(),
        size >> 20,
        bins.tests.len(),
        bins.tests
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    for (name, why) in GUEST_SKIPS {
        eprintln!("vm: not run in the guest: {name}: {why}");
    }
    let mut accel = initial_accel(opts.accel, &cache)?;
    let runs = boot::boot_all(opts, &kernels, &initrd, &cache, &mut accel)?;

    eprintln!("==> vm: summary");
    for r in &runs {
        let verdict = if r.failure.is_some() {
            "FAILED"
        } else {
            "passed"
        };
        // One plain line per boot on stdout, like `cargo xtask test`'s closing line.
        println!(
            "vm {} {}: {verdict}: {} passed, {} failed, {} skipped in {:.0?}",
            r.kernel, r.backend, r.counts.passed, r.counts.failed, r.counts.ignored, r.elapsed
        );
    }
    eprintln!(
        "==> vm: done in {:.0?} (build {:.0?}, accelerator {})",
        started.elapsed(),
        build_time,
        accel.name()
    );
    // The closing line CI reads: the totals over every boot.
    let (p, f, s) = runs.iter().fold((0, 0, 0), |(p, f, s), r| {
        (
            p + r.counts.passed,
            f + r.counts.failed,
            s + r.counts.ignored,
        )
    });
    println!("{p} passed, {f} failed, {s} skipped");
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| r.failure.is_some())
        .map(|r| format!("{} {}", r.kernel, r.backend))
        .collect();
    if !failed.is_empty() {
        bail!("the VM suite failed on: {}", failed.join(", "));
    }
    Ok(())
}

/// The kernel command line: BPF LSM on (both backends boot the same kernel; the tests
/// are told which to load), and the guest's arguments after `--`.
fn append(backend: &str, filters: &[String]) -> String {
    let mut line =
        String::from("console=ttyS0 quiet panic=-1 lsm=lockdown,capability,landlock,bpf -- ");
    line.push_str(backend);
    for (name, _) in GUEST_SKIPS {
        line.push_str(" --skip ");
        line.push_str(name);
    }
    for filter in filters {
        line.push(' ');
        line.push_str(filter);
    }
    line
}

fn init_deadline(accel: Accel) -> Duration {
    match accel {
        // A working KVM reaches /init in about a second; a broken one hangs.
        Accel::Kvm => Duration::from_secs(30),
        // ~3 s on an idle machine under TCG; generous for a loaded CI runner.
        Accel::Tcg => Duration::from_mins(2),
    }
}

/// Reads the verdict of one boot from its console.
fn judge(kernel: String, backend: &'static str, console: &qemu::Console, timeout: Duration) -> Run {
    let mut counts = Counts::default();
    for line in &console.lines {
        if let Some(c) = Counts::parse_line(line) {
            counts.add(c);
        }
    }
    let results: Vec<&str> = console
        .lines
        .iter()
        .filter_map(|l| result_line(l))
        .collect();
    let panicked = console
        .lines
        .iter()
        .find(|l| l.contains("Kernel panic") || l.contains("kernel BUG at"));
    let failure = if let Some(line) = panicked {
        Some(format!("the guest kernel crashed: {}", line.trim()))
    } else if matches!(console.end, End::TimedOut) {
        Some(format!(
            "timed out after {timeout:.0?} (raise it with --timeout)"
        ))
    } else if matches!(console.end, End::NoBoot) {
        Some("the guest did not reach /init".to_owned())
    } else if results.len() != 1 {
        Some(format!(
            "expected exactly one `leash-vm: success|failure` line on the console, found {}",
            results.len()
        ))
    } else if results[0].starts_with("failure") {
        Some(format!("the guest reported {}", results[0]))
    } else if counts.failed > 0 {
        Some(format!(
            "the guest reported success, but {} tests failed",
            counts.failed
        ))
    } else if counts.passed == 0 {
        Some("no test ran: does the filter match any test?".to_owned())
    } else {
        None
    };
    match (&failure, &console.end) {
        (None, End::Exited(status)) if !status.success() => {
            eprintln!("vm: note: qemu exited with {status} after the guest's result");
        }
        (None, End::Lingered) => {
            eprintln!("vm: note: the guest did not power off after its result; qemu was killed");
        }
        _ => {}
    }
    Run {
        kernel,
        backend,
        counts,
        elapsed: console.elapsed,
        failure,
    }
}

/// `success …` or `failure …` from a result line of the guest's `/init`, which may be
/// preceded by a kernel message that shared the line.
fn result_line(line: &str) -> Option<&str> {
    let at = line.find("leash-vm: ")?;
    let rest = &line[at + "leash-vm: ".len()..];
    (rest.starts_with("success") || rest.starts_with("failure")).then_some(rest.trim_end())
}

/// Records why KVM is not used here, so later runs go straight to TCG.
const KVM_UNUSABLE: &str = "kvm-unusable";

/// What identifies "this host" for the KVM verdict: the host kernel and qemu versions.
fn host_fingerprint() -> String {
    let uname = util::output(Command::new("uname").arg("-r")).unwrap_or_default();
    let qemu =
        util::output(Command::new("qemu-system-x86_64").arg("--version")).unwrap_or_default();
    format!(
        "{} / {}",
        uname.trim(),
        qemu.lines().next().unwrap_or_default().trim()
    )
}

fn initial_accel(arg: AccelArg, cache: &Path) -> anyhow::Result<Accel> {
    let kvm_usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    match arg {
        AccelArg::Tcg => Ok(Accel::Tcg),
        AccelArg::Kvm if kvm_usable => Ok(Accel::Kvm),
        AccelArg::Kvm => bail!("--accel kvm: cannot open /dev/kvm read-write"),
        AccelArg::Auto if !kvm_usable => {
            eprintln!("vm: /dev/kvm is not usable: TCG");
            Ok(Accel::Tcg)
        }
        AccelArg::Auto => {
            let marker = cache.join(KVM_UNUSABLE);
            let known = fs::read_to_string(&marker).unwrap_or_default();
            let fingerprint = host_fingerprint();
            if known.lines().next() == Some(fingerprint.as_str()) {
                eprintln!(
                    "vm: KVM failed to boot the guest before on this host ({fingerprint}; see \
                     {}): TCG. --accel kvm tries it anyway.",
                    marker.display()
                );
                Ok(Accel::Tcg)
            } else {
                Ok(Accel::Kvm)
            }
        }
    }
}

fn note_kvm_unusable(cache: &Path, console: &qemu::Console) -> anyhow::Result<()> {
    let mut text = host_fingerprint();
    text.push('\n');
    for line in console.tail(10) {
        let _ = writeln!(text, "{line}");
    }
    let marker = cache.join(KVM_UNUSABLE);
    fs::write(&marker, text).with_context(|| format!("could not write {}", marker.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines() {
        assert_eq!(
            result_line("leash-vm: success lsm 5 binaries"),
            Some("success lsm 5 binaries")
        );
        assert_eq!(
            result_line("[  3.1] random: crng initleash-vm: failure lsm: exec"),
            Some("failure lsm: exec")
        );
        assert_eq!(result_line("leash-vm: init 6.1.0"), None);
        assert_eq!(result_line("test result: ok. 3 passed"), None);
    }

    #[test]
    fn command_line_carries_backend_and_filters() {
        let line = append("lsm", &["exec".into(), "--exact".into()]);
        assert!(line.contains("lsm=lockdown,capability,landlock,bpf"));
        assert!(line.contains("-- lsm --skip "));
        assert!(line.ends_with(" exec --exact"));
    }

    fn console(lines: &[&str]) -> qemu::Console {
        qemu::Console {
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
            end: End::Exited(std::os::unix::process::ExitStatusExt::from_raw(0)),
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn judges_the_console() {
        let t = Duration::from_mins(1);
        let ok = judge(
            "6.1".into(),
            "lsm",
            &console(&[
                "leash-vm: init",
                "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured",
                "leash-vm: success",
            ]),
            t,
        );
        assert!(ok.failure.is_none());
        assert_eq!(ok.counts.passed, 3);

        let none = judge("6.1".into(), "lsm", &console(&["leash-vm: init"]), t);
        assert!(none.failure.unwrap().contains("found 0"));

        let panic = judge(
            "6.1".into(),
            "lsm",
            &console(&[
                "leash-vm: init",
                "Kernel panic - not syncing: Attempted to kill init!",
            ]),
            t,
        );
        assert!(panic.failure.unwrap().contains("crashed"));

        let failed = judge(
            "6.1".into(),
            "lsm",
            &console(&[
                "leash-vm: init",
                "test result: FAILED. 2 passed; 1 failed; 0 ignored",
                "leash-vm: failure lsm: exec",
            ]),
            t,
        );
        assert!(failed.failure.unwrap().contains("failure lsm: exec"));

        let two = judge(
            "6.1".into(),
            "lsm",
            &console(&[
                "test result: ok. 2 passed; 0 failed; 0 ignored",
                "leash-vm: success",
                "leash-vm: success",
            ]),
            t,
        );
        assert!(two.failure.unwrap().contains("found 2"));
    }
}
