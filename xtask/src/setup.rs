//! `cargo xtask setup`: installs what building and testing leash needs. Idempotent: each
//! step checks first and says "already set up: nothing to do" when there is nothing to do.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::util::{self, BpfLinker};

/// Debian packages the tests and the daemon's operators use (`bpftool prog`, `ip`,
/// `promtool` from prometheus to check the metrics exposition and the alert rules,
/// `openssl` to make the test keys of the bearer-token tests, `mkfs.btrfs` and the
/// `bindfs` FUSE file system for the file-system identity tests). The `dns` tests need
/// nothing installed: their DNS server is built into the test harness.
const APT_PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "prometheus",
    "openssl",
    "btrfs-progs",
    "bindfs",
];

/// Components of the nightly toolchain: aya-build compiles the eBPF crate with
/// `-Z build-std=core` (rust-src), and `cargo xtask test` lints it (clippy).
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy"];

/// Components of the active (host) toolchain that `cargo xtask test` uses.
const HOST_COMPONENTS: &[&str] = &["clippy", "rustfmt"];

/// The bpf-linker release that matches aya-build 0.2.0 and nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_SERIES: &str = "bpf-linker 0.13.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `cargo xtask setup`: every step must succeed.
    Explicit,
    /// Run first by `test` and `run`: a step that needs root (apt) is skipped with a
    /// warning when not root, so the unprivileged parts of `test` still run.
    Implicit,
}

enum Outcome {
    AlreadyDone(String),
    Done(String),
    Skipped(String),
}

type Step = fn(Mode) -> anyhow::Result<Outcome>;

pub(crate) fn run(mode: Mode) -> anyhow::Result<()> {
    let steps: [(&str, Step); 5] = [
        ("nightly toolchain (rust-src, clippy)", nightly),
        ("host toolchain (clippy, rustfmt)", host_components),
        ("bpf-linker 0.13", bpf_linker),
        ("cargo-fuzz", cargo_fuzz),
        (
            "apt packages (bpftool, iproute2, prometheus, openssl, btrfs-progs, bindfs)",
            apt_packages,
        ),
    ];
    for (name, step) in steps {
        match step(mode).with_context(|| format!("setup step `{name}` failed"))? {
            Outcome::AlreadyDone(detail) => {
                eprintln!("setup: {name}: already set up: nothing to do ({detail})");
            }
            Outcome::Done(what) => eprintln!("setup: {name}: {what}"),
            Outcome::Skipped(why) => eprintln!("setup: {name}: WARNING: skipped: {why}"),
        }
    }
    Ok(())
}

fn nightly(_: Mode) -> anyhow::Result<Outcome> {
    let mut did = Vec::new();
    let toolchains = util::output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(is_plain_nightly) {
        eprintln!("setup: no nightly toolchain: installing it");
        util::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
        did.push("installed the nightly toolchain (profile minimal)".to_owned());
    }
    let missing = missing_components(Some("nightly"), NIGHTLY_COMPONENTS)?;
    if !missing.is_empty() {
        util::run(
            Command::new("rustup")
                .args(["component", "add", "--toolchain", "nightly"])
                .args(&missing),
        )?;
        did.push(format!("added {}", missing.join(", ")));
    }
    if did.is_empty() {
        let version = util::output(Command::new("rustc").args(["+nightly", "--version"]))?;
        Ok(Outcome::AlreadyDone(version.trim().to_owned()))
    } else {
        Ok(Outcome::Done(did.join("; ")))
    }
}

/// `nightly-x86_64-unknown-linux-gnu (default)` yes; `nightly-2025-01-01-…` (dated) no.
fn is_plain_nightly(line: &str) -> bool {
    let name = line.split_whitespace().next().unwrap_or_default();
    name == "nightly"
        || name
            .strip_prefix("nightly-")
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
}

fn host_components(_: Mode) -> anyhow::Result<Outcome> {
    let missing = missing_components(None, HOST_COMPONENTS)?;
    if missing.is_empty() {
        let version = util::output(Command::new("rustc").arg("--version"))?;
        return Ok(Outcome::AlreadyDone(version.trim().to_owned()));
    }
    util::run(
        Command::new("rustup")
            .args(["component", "add"])
            .args(&missing),
    )?;
    Ok(Outcome::Done(format!("added {}", missing.join(", "))))
}

/// The `wanted` components not installed in `toolchain` (None: the active toolchain).
fn missing_components(toolchain: Option<&str>, wanted: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut cmd = Command::new("rustup");
    cmd.args(["component", "list", "--installed"]);
    if let Some(toolchain) = toolchain {
        cmd.args(["--toolchain", toolchain]);
    }
    let installed = util::output(&mut cmd)?;
    Ok(wanted
        .iter()
        .filter(|name| {
            !installed
                .lines()
                .any(|line| is_component(line.trim(), name))
        })
        .map(|name| (*name).to_owned())
        .collect())
}

/// Installed components are listed with the host triple (`clippy-x86_64-…`), except
/// target-independent ones (`rust-src`).
fn is_component(line: &str, name: &str) -> bool {
    line == name
        || line
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('-'))
}

fn bpf_linker(_: Mode) -> anyhow::Result<Outcome> {
    let why = match util::bpf_linker() {
        BpfLinker::Version(version) if version.starts_with(BPF_LINKER_SERIES) => {
            return Ok(Outcome::AlreadyDone(version));
        }
        BpfLinker::Version(version) => format!("found {version}, need 0.13.x"),
        BpfLinker::Missing => "not on PATH".to_owned(),
        BpfLinker::Broken(why) => why,
    };
    eprintln!("setup: bpf-linker: {why}: installing {BPF_LINKER_VERSION} (takes about a minute)");
    let major = install_bpf_linker()?;
    match util::bpf_linker() {
        BpfLinker::Version(version) if version.starts_with(BPF_LINKER_SERIES) => Ok(Outcome::Done(
            format!("installed {version} (LLVM {major} of the nightly toolchain)"),
        )),
        BpfLinker::Version(version) => bail!(
            "installed bpf-linker {BPF_LINKER_VERSION}, but `bpf-linker` on PATH is still \
             {version}: put cargo's bin directory (~/.cargo/bin) first in PATH"
        ),
        BpfLinker::Missing => bail!(
            "installed bpf-linker into cargo's bin directory, which is not on PATH: \
             export PATH=\"$HOME/.cargo/bin:$PATH\" and run `cargo xtask setup` again"
        ),
        BpfLinker::Broken(why) => bail!("installed bpf-linker, but it does not run: {why}"),
    }
}

/// The cargo-fuzz release `cargo xtask fuzz` drives.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz (`cargo fuzz`), for `cargo xtask fuzz` and the test step that runs the
/// fuzz targets; built from crates.io with the host toolchain.
fn cargo_fuzz(_: Mode) -> anyhow::Result<Outcome> {
    let version = |cmd: &mut Command| {
        cmd.args(["fuzz", "--version"])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if let Some(v) = version(&mut util::cargo()) {
        return Ok(Outcome::AlreadyDone(v));
    }
    eprintln!(
        "setup: cargo-fuzz: not installed: installing {CARGO_FUZZ_VERSION} (takes about 2 minutes)"
    );
    let install = |locked: bool| {
        let mut cmd = util::cargo();
        cmd.args(["install", &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}")])
            .args(locked.then_some("--locked"));
        cmd
    };
    if let Err(err) = util::run(&mut install(true)) {
        eprintln!("setup: {err:#}; retrying without --locked");
        util::run(&mut install(false))?;
    }
    match version(&mut util::cargo()) {
        Some(v) => Ok(Outcome::Done(format!("installed {v}"))),
        None => bail!(
            "installed cargo-fuzz, but `cargo fuzz --version` fails: is cargo's bin directory (~/.cargo/bin) on PATH?"
        ),
    }
}

/// Builds bpf-linker against the nightly toolchain's own libLLVM, so no system LLVM is
/// needed and its LLVM matches the one rustc emits bitcode for. Returns the LLVM major.
fn install_bpf_linker() -> anyhow::Result<u32> {
    let sysroot = util::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let llvm_dir = Path::new(sysroot.trim()).join("lib");
    let llvm = find_libllvm(&llvm_dir)?;
    let file_name = llvm
        .file_name()
        .and_then(|name| name.to_str())
        .context("libLLVM file name is not UTF-8")?;
    let major = llvm_major(file_name)?;

    // bpf-linker's build script links `-lLLVM` from `$LLVM_PREFIX/lib`, and the binary
    // then needs the library under its soname (the full file name) at run time.
    let prefix = util::workspace_root().join("target").join("llvm-prefix");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("could not create {}", lib.display()))?;
    for link in ["libLLVM.so", file_name] {
        let link = lib.join(link);
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link)
                .with_context(|| format!("could not remove old {}", link.display()))?;
        }
        symlink(&llvm, &link)
            .with_context(|| format!("could not link {} -> {}", link.display(), llvm.display()))?;
    }
    eprintln!(
        "setup: linked {}/libLLVM.so -> {}",
        lib.display(),
        llvm.display()
    );

    // The build script sets an rpath to the prefix (under target/, which `cargo clean`
    // removes); a second rpath to the toolchain keeps bpf-linker working after that.
    let rustflags = format!("-Clink-arg=-Wl,-rpath,{}", llvm_dir.display());
    let install = |locked: bool| {
        let mut cmd = util::cargo();
        cmd.args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
            .args(locked.then_some("--locked"))
            .args(["--force", "--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix)
            .env("CARGO_ENCODED_RUSTFLAGS", &rustflags);
        cmd
    };
    if let Err(err) = util::run(&mut install(true)) {
        eprintln!("setup: {err:#}; retrying without --locked");
        util::run(&mut install(false))?;
    }
    Ok(major)
}

/// The nightly toolchain's `lib/libLLVM.so.*` (e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`).
fn find_libllvm(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("could not list {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libLLVM.so."))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some(path) => Ok(path),
        None => bail!(
            "no libLLVM.so.* in {}: bpf-linker is built against the nightly toolchain's LLVM",
            dir.display()
        ),
    }
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` -> 22.
fn llvm_major(file_name: &str) -> anyhow::Result<u32> {
    let version = file_name
        .strip_prefix("libLLVM.so.")
        .with_context(|| format!("{file_name} is not named libLLVM.so.*"))?;
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .with_context(|| format!("no LLVM major version in {file_name}"))
}

fn apt_packages(mode: Mode) -> anyhow::Result<Outcome> {
    let Some(missing) = missing_packages()? else {
        let why = format!(
            "dpkg not found; install {} with this system's package manager",
            APT_PACKAGES.join(", ")
        );
        return match mode {
            Mode::Explicit => bail!(why),
            Mode::Implicit => Ok(Outcome::Skipped(why)),
        };
    };
    if missing.is_empty() {
        return Ok(Outcome::AlreadyDone("all installed".to_owned()));
    }
    if !util::is_root()? {
        let why = format!(
            "{} not installed and apt-get needs root: run `sudo -E cargo xtask setup`",
            missing.join(", ")
        );
        return match mode {
            Mode::Explicit => bail!(why),
            Mode::Implicit => Ok(Outcome::Skipped(why)),
        };
    }
    util::apt_update()?;
    util::apt_install(&missing)?;
    match missing_packages()? {
        Some(still) if !still.is_empty() => {
            bail!(
                "apt-get install succeeded but {} is still not installed",
                still.join(", ")
            )
        }
        _ => Ok(Outcome::Done(format!("installed {}", missing.join(", ")))),
    }
}

/// The packages of [`APT_PACKAGES`] that dpkg does not report as installed, or None
/// when there is no dpkg (not Debian or Ubuntu).
fn missing_packages() -> anyhow::Result<Option<Vec<&'static str>>> {
    let mut missing = Vec::new();
    for &name in APT_PACKAGES {
        let out = match Command::new("dpkg")
            .args(["-s", name])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => out,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).context("could not run `dpkg -s`"),
        };
        // `dpkg -s` also succeeds for removed packages whose config files remain.
        let installed = out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|line| line.trim() == "Status: install ok installed");
        if !installed {
            missing.push(name);
        }
    }
    Ok(Some(missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_file_name() {
        assert_eq!(
            llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly").unwrap(),
            22
        );
        assert_eq!(llvm_major("libLLVM.so.19").unwrap(), 19);
        assert!(llvm_major("libLLVM.so.rust").is_err());
        assert!(llvm_major("libLLVM-22.so").is_err());
    }

    #[test]
    fn nightly_lines() {
        assert!(is_plain_nightly("nightly-x86_64-unknown-linux-gnu"));
        assert!(is_plain_nightly(
            "nightly-x86_64-unknown-linux-gnu (active, default)"
        ));
        assert!(!is_plain_nightly(
            "nightly-2025-01-01-x86_64-unknown-linux-gnu"
        ));
        assert!(!is_plain_nightly(
            "stable-x86_64-unknown-linux-gnu (default)"
        ));
    }

    #[test]
    fn component_lines() {
        assert!(is_component("rust-src", "rust-src"));
        assert!(is_component("clippy-x86_64-unknown-linux-gnu", "clippy"));
        assert!(!is_component(
            "rust-std-x86_64-unknown-linux-gnu",
            "rust-src"
        ));
        assert!(!is_component("rustfmt-x86_64-unknown-linux-gnu", "rust"));
    }
}
