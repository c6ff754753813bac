//! Paths and process helpers shared by the subcommands.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// The workspace root: the parent of this crate's directory.
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (relative to the current
/// directory, as cargo reads it), else `<root>/target`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => std::env::current_dir()
            .unwrap_or_else(|_| workspace_root().to_owned())
            .join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Selects every workspace member that builds for the host. `--workspace` alone would
/// also select agent-ebpf, which only builds for `bpfel-unknown-none` (aya-build drives
/// it; `cargo xtask test` lints it separately).
pub(crate) const HOST_WORKSPACE: &[&str] = &["--workspace", "--exclude", "leash-ebpf"];

/// `cargo` from PATH (the rustup proxy, so `+nightly` works), run in the workspace root.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// The command line as a user could paste it, with the environment it sets.
pub(crate) fn display(cmd: &Command) -> String {
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let _ = write!(line, "{}={} ", key.to_string_lossy(), quote(value));
        }
    }
    line.push_str(&quote(cmd.get_program()));
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+@,%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with inherited stdio; fails naming the command unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let line = display(cmd);
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Test counts summed over cargo's `test result:` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Reads cargo's `test result: ok. 7 passed; 0 failed; 1 ignored; ...` and pytest's
    /// closing `126 passed, 2 skipped in 3.21s` (bare with `-q`, or inside `=` rules).
    pub(crate) fn parse_line(line: &str) -> Option<Self> {
        let trimmed = line.trim().trim_matches('=').trim();
        if !line.trim().starts_with("test result: ")
            && trimmed
                .split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u64>().is_ok())
            && trimmed.contains(" in ")
            && (trimmed.contains(" passed") || trimmed.contains(" failed"))
        {
            let mut counts = Self::default();
            for part in trimmed.split(" in ").next().unwrap_or_default().split(',') {
                let mut words = part.split_whitespace();
                let (Some(n), Some(what)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => counts.passed = n,
                    "failed" | "errors" | "error" => counts.failed += n,
                    "skipped" => counts.ignored = n,
                    _ => {}
                }
            }
            return Some(counts);
        }
        let rest = line.trim().strip_prefix("test result: ")?;
        let mut counts = Self::default();
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => counts.passed = n,
                "failed" => counts.failed = n,
                "ignored" => counts.ignored = n,
                _ => {}
            }
        }
        Some(counts)
    }
}

/// Runs a `cargo test` command, echoing its stdout, and sums its test counts.
pub(crate) fn run_tests(cmd: &mut Command) -> anyhow::Result<Counts> {
    use std::io::BufRead as _;
    let line = display(cmd);
    eprintln!("$ {line}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().context("no stdout")?;
    for l in std::io::BufReader::new(stdout).lines() {
        let l = l.context("reading test output")?;
        println!("{l}");
        if let Some(c) = Counts::parse_line(&l) {
            counts.add(c);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(counts)
}

/// Runs `cmd` quietly and returns its stdout; fails with its stderr unless it exits 0.
pub(crate) fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let line = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// `apt-get update`, non-interactive.
pub(crate) fn apt_update() -> anyhow::Result<()> {
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null()))
}

/// `apt-get install -y --no-install-recommends PACKAGES`, without prompts.
pub(crate) fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null()))
}

/// Whether this process runs as root. Reads `id -u` rather than pulling in libc.
pub(crate) fn is_root() -> anyhow::Result<bool> {
    let uid = output(Command::new("id").arg("-u"))?;
    Ok(uid.trim() == "0")
}

/// What `bpf-linker --version` says, or why it could not say it.
pub(crate) enum BpfLinker {
    Version(String),
    Missing,
    Broken(String),
}

pub(crate) fn bpf_linker() -> BpfLinker {
    match Command::new("bpf-linker")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            BpfLinker::Version(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        Ok(out) => BpfLinker::Broken(format!(
            "`bpf-linker --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => BpfLinker::Missing,
        Err(err) => BpfLinker::Broken(format!("could not run `bpf-linker --version`: {err}")),
    }
}

/// Fails with a pointer to `cargo xtask setup` unless a working bpf-linker is on PATH.
/// agent-userspace's build script needs it to build the eBPF object.
pub(crate) fn require_bpf_linker() -> anyhow::Result<()> {
    match bpf_linker() {
        BpfLinker::Version(_) => Ok(()),
        BpfLinker::Missing => {
            bail!(
                "bpf-linker is not on PATH (it builds the eBPF object): run `cargo xtask setup` first"
            )
        }
        BpfLinker::Broken(why) => bail!("{why}: run `cargo xtask setup` first"),
    }
}

#[cfg(test)]
mod counts_tests {
    use super::Counts;

    #[test]
    fn parses_cargo_test_result_lines() {
        let c = Counts::parse_line(
            "test result: ok. 7 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 5.49s",
        );
        assert_eq!(
            c,
            Some(Counts {
                passed: 7,
                failed: 2,
                ignored: 1
            })
        );
        assert_eq!(Counts::parse_line("running 7 tests"), None);
        assert_eq!(
            Counts::parse_line("126 passed, 2 skipped in 3.21s"),
            Some(Counts {
                passed: 126,
                failed: 0,
                ignored: 2
            })
        );
        assert_eq!(
            Counts::parse_line("===== 3 failed, 10 passed in 1.00s ====="),
            Some(Counts {
                passed: 10,
                failed: 3,
                ignored: 0
            })
        );
    }
}
