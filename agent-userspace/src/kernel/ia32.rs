//! Whether the running kernel takes i386 system calls ("ia32 emulation") or x32 ones,
//! for `leash status` and to decide whether the compat guard (`compat_sys_enter`, which
//! runs on every system call of the machine) is needed at all. Told from files only
//! (the kernel config, the command line, the symbol table): trying `int $0x80` where
//! emulation is off is a SIGSEGV.

use std::io::Read as _;

/// What `leash status` says of ia32 emulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Enabled,
    Disabled,
    Unknown,
}

impl State {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Unknown => "unknown",
        }
    }
}

/// The answer and what it was told from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ia32 {
    pub state: State,
    pub why: String,
    /// Whether the kernel is built with the x32 ABI (`CONFIG_X86_X32_ABI`); `None`
    /// when neither the config nor the symbol table tells.
    pub x32: Option<bool>,
}

impl Ia32 {
    /// Whether any compat system call can reach this kernel: only when none can (ia32
    /// emulation off and no x32 ABI, both known) may the compat guard be left out.
    #[must_use]
    pub fn compat_entries(&self) -> bool {
        self.state != State::Disabled || self.x32 != Some(false)
    }
}

impl std::fmt::Display for Ia32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.state.name(), self.why)?;
        match self.x32 {
            Some(true) => f.write_str("; x32 ABI built in")?,
            Some(false) => f.write_str("; no x32 ABI")?,
            None => f.write_str("; x32 ABI unknown")?,
        }
        if self.compat_entries() {
            f.write_str("; compat guard attached")
        } else {
            f.write_str("; no compat system call can reach this kernel, so no compat guard runs")
        }
    }
}

/// What the answer is told from.
#[derive(Debug, Default)]
pub struct Sources {
    /// `uname -m`.
    pub arch: String,
    /// `uname -r`.
    pub release: String,
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// The kernel's build config, where one is readable.
    pub config: Option<String>,
    /// Whether `/proc/kallsyms` names the i386 system call table's entries; `None`
    /// when it is not readable.
    pub ia32_symbols: Option<bool>,
    /// Whether `/proc/kallsyms` names x32 entry points; `None` when it is not readable.
    pub x32_symbols: Option<bool>,
}

impl Sources {
    /// Reads them from the running system.
    #[must_use]
    pub fn read() -> Self {
        let release = read_trimmed("/proc/sys/kernel/osrelease");
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").ok();
        Self {
            arch: std::env::consts::ARCH.to_owned(),
            config: kernel_config(&release),
            release,
            cmdline: read_trimmed("/proc/cmdline"),
            ia32_symbols: kallsyms
                .as_ref()
                .map(|s| s.contains(" __ia32_sys_getpid\n")),
            x32_symbols: kallsyms.as_ref().map(|s| s.contains(" __x32_compat_sys_")),
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `/boot/config-<release>`, else `/proc/config.gz` (`CONFIG_IKCONFIG_PROC`).
fn kernel_config(release: &str) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(format!("/boot/config-{release}")) {
        return Some(text);
    }
    let gz = std::fs::File::open("/proc/config.gz").ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The running kernel's answer, read once: none of it changes until a reboot.
#[must_use]
pub fn detect() -> Ia32 {
    static ONCE: std::sync::OnceLock<Ia32> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| decide(&Sources::read())).clone()
}

/// `(major, minor)` of a release string such as `6.1.0-37-amd64`.
fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The last `ia32_emulation=` of the kernel's own part of the command line (what
/// follows `--` goes to init), parsed as the kernel's `kstrtobool` does.
fn cmdline_switch(cmdline: &str) -> Option<bool> {
    cmdline
        .split_whitespace()
        .take_while(|w| *w != "--")
        .filter_map(|w| w.strip_prefix("ia32_emulation="))
        .last()
        .and_then(|v| match v.as_bytes() {
            [b'y' | b'Y' | b't' | b'T' | b'1', ..] | [b'o' | b'O', b'n' | b'N', ..] => Some(true),
            [b'n' | b'N' | b'f' | b'F' | b'0', ..] | [b'o' | b'O', b'f' | b'F', ..] => Some(false),
            _ => None,
        })
}

fn config_set(config: &str, option: &str) -> bool {
    config
        .lines()
        .any(|l| l.strip_prefix(option).is_some_and(|v| v == "=y"))
}

/// Decides from `s`. Linux 6.7 added the `ia32_emulation=` switch and the build
/// option that turns it off by default; before it, a kernel built with
/// `CONFIG_IA32_EMULATION` always takes i386 system calls.
#[must_use]
pub fn decide(s: &Sources) -> Ia32 {
    let (state, why) = ia32_state(s);
    Ia32 {
        state,
        why: why.to_owned(),
        x32: x32_built(s),
    }
}

/// `CONFIG_X86_X32_ABI` from the config, else from the symbol table.
fn x32_built(s: &Sources) -> Option<bool> {
    if s.arch != "x86_64" {
        return None;
    }
    match &s.config {
        Some(c) => Some(config_set(c, "CONFIG_X86_X32_ABI")),
        None => s.x32_symbols,
    }
}

fn ia32_state(s: &Sources) -> (State, &'static str) {
    let answer = |state, why| (state, why);
    if s.arch != "x86_64" {
        return answer(State::Unknown, "not an x86_64 kernel");
    }
    let built_in = match (&s.config, s.ia32_symbols) {
        (Some(c), _) => Some(config_set(c, "CONFIG_IA32_EMULATION")),
        (None, known) => known,
    };
    if built_in == Some(false) {
        return answer(State::Disabled, "the kernel is built without it");
    }
    let Some(v) = version(&s.release) else {
        return answer(State::Unknown, "unrecognised kernel release");
    };
    if v < (6, 7) {
        return match built_in {
            Some(_) => answer(
                State::Enabled,
                "built in; before Linux 6.7 it cannot be turned off at boot",
            ),
            None => answer(
                State::Unknown,
                "neither the kernel config nor kallsyms is readable",
            ),
        };
    }
    if let Some(on) = cmdline_switch(&s.cmdline) {
        return if on {
            answer(
                State::Enabled,
                "ia32_emulation=1 on the kernel command line",
            )
        } else {
            answer(
                State::Disabled,
                "ia32_emulation=0 on the kernel command line",
            )
        };
    }
    match &s.config {
        Some(c) if config_set(c, "CONFIG_IA32_EMULATION_DEFAULT_DISABLED") => answer(
            State::Disabled,
            "off by default in this build (CONFIG_IA32_EMULATION_DEFAULT_DISABLED)",
        ),
        Some(_) => answer(
            State::Enabled,
            "on by default in this build; boot with ia32_emulation=0 to turn it off",
        ),
        None => answer(
            State::Unknown,
            "the kernel config is not readable to tell its default",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(release: &str, cmdline: &str, config: Option<&str>) -> Sources {
        Sources {
            arch: "x86_64".into(),
            release: release.into(),
            cmdline: cmdline.into(),
            config: config.map(str::to_owned),
            ia32_symbols: Some(true),
            x32_symbols: Some(false),
        }
    }

    const ON: &str = "CONFIG_COMPAT=y\nCONFIG_IA32_EMULATION=y\n";
    const OFF_BY_DEFAULT: &str =
        "CONFIG_IA32_EMULATION=y\nCONFIG_IA32_EMULATION_DEFAULT_DISABLED=y\n";

    #[test]
    fn reads_the_switch_the_default_and_the_build() {
        let state = |s: Sources| decide(&s).state;
        assert_eq!(state(sources("6.18.4", "quiet", Some(ON))), State::Enabled);
        assert_eq!(
            state(sources("6.18.4", "quiet ia32_emulation=0", Some(ON))),
            State::Disabled
        );
        assert_eq!(
            state(sources("6.8.0", "ia32_emulation=off", None)),
            State::Disabled
        );
        assert_eq!(
            state(sources("6.8.0", "ia32_emulation=1", Some(OFF_BY_DEFAULT))),
            State::Enabled
        );
        assert_eq!(
            state(sources("6.8.0", "", Some(OFF_BY_DEFAULT))),
            State::Disabled
        );
        // The last one counts; what follows `--` is init's.
        assert_eq!(
            state(sources(
                "6.8.0",
                "ia32_emulation=0 ia32_emulation=y -- ia32_emulation=0",
                Some(ON)
            )),
            State::Enabled
        );
        // Before 6.7 the switch does not exist.
        assert_eq!(
            state(sources("6.1.0-37-amd64", "ia32_emulation=0", Some(ON))),
            State::Enabled
        );
        assert_eq!(
            state(sources(
                "6.1.0",
                "",
                Some("# CONFIG_IA32_EMULATION is not set\n")
            )),
            State::Disabled
        );
        // No config: the symbols tell whether it is built in, not its default.
        assert_eq!(state(sources("6.12.1", "", None)), State::Unknown);
        let mut s = sources("6.12.1", "", None);
        s.ia32_symbols = Some(false);
        assert_eq!(state(s), State::Disabled);
        let mut s = sources("6.12.1", "", Some(ON));
        s.arch = "aarch64".into();
        assert_eq!(state(s), State::Unknown);
    }

    #[test]
    fn the_compat_guard_is_left_out_only_when_no_compat_entry_can_exist() {
        let decided = |s: Sources| decide(&s);
        let off = "quiet ia32_emulation=0";
        // ia32 off and no x32 in the config: nothing to guard.
        assert!(!decided(sources("6.18.4", off, Some(ON))).compat_entries());
        // ia32 on, or x32 built in, or either unknown: the guard runs.
        assert!(decided(sources("6.18.4", "quiet", Some(ON))).compat_entries());
        let x32 = "CONFIG_IA32_EMULATION=y\nCONFIG_X86_X32_ABI=y\n";
        assert!(decided(sources("6.18.4", off, Some(x32))).compat_entries());
        let mut s = sources("6.18.4", off, None);
        s.x32_symbols = None;
        assert!(decided(s).compat_entries());
        let mut s = sources("6.18.4", off, None);
        s.x32_symbols = Some(true);
        assert!(decided(s).compat_entries());
        assert!(!decided(sources("6.18.4", off, None)).compat_entries());
        assert!(decided(sources("6.18.4", "", None)).compat_entries());
    }

    #[test]
    fn reads_this_machine() {
        // Whatever the answer, it says why.
        assert!(!detect().why.is_empty());
    }
}
