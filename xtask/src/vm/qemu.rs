//! Boots one guest and collects its console.

use std::io::{BufRead as _, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::util;

/// The line the guest's `/init` prints first: the kernel booted and ran it.
pub(super) const BOOTED: &str = "leash-vm: init";

/// Which accelerator a boot uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn args(self) -> &'static [&'static str] {
        match self {
            Self::Kvm => &["-accel", "kvm", "-cpu", "host"],
            // `max` has every feature TCG emulates (RDRAND for the guest's entropy,
            // SMEP/SMAP like real hosts).
            Self::Tcg => &["-accel", "tcg", "-cpu", "max"],
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

pub(super) struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub append: String,
    pub accel: Accel,
    pub memory_mb: u32,
    pub cpus: u32,
    /// The whole boot must finish within this.
    pub timeout: Duration,
    /// [`BOOTED`] must appear within this (how a hanging KVM is told apart).
    pub init_deadline: Duration,
    /// Each console line is echoed with this prefix.
    pub prefix: String,
    /// Tells the guest's last line: after it, qemu gets [`LINGER`] to exit by itself.
    pub is_last_line: fn(&str) -> bool,
}

/// How long qemu may take to exit after the guest's last line (it powers off at once).
const LINGER: Duration = Duration::from_secs(30);

pub(super) enum End {
    /// qemu exited by itself (the guest powered off, or the kernel panicked: `panic=-1`
    /// with `-no-reboot` makes qemu exit).
    Exited(std::process::ExitStatus),
    /// [`BOOTED`] never came.
    NoBoot,
    TimedOut,
    /// The guest printed its last line but qemu did not exit within [`LINGER`]; killed.
    Lingered,
}

pub(super) struct Console {
    pub lines: Vec<String>,
    pub end: End,
    pub elapsed: Duration,
}

impl Console {
    pub(super) fn booted(&self) -> bool {
        self.lines.iter().any(|l| l.contains(BOOTED))
    }

    /// The last `n` lines, for a failure report.
    pub(super) fn tail(&self, n: usize) -> &[String] {
        &self.lines[self.lines.len().saturating_sub(n)..]
    }
}

/// Boots and waits for qemu to exit, echoing and collecting the console (the guest's
/// serial port, and qemu's own stderr).
pub(super) fn boot(b: &Boot) -> anyhow::Result<Console> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(b.accel.args())
        .args(["-m", &b.memory_mb.to_string(), "-smp", &b.cpus.to_string()])
        // No NIC, VGA or default serial/monitor: the console is the one serial port.
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd)
        .args(["-append", &b.append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("$ {}", util::display(&cmd));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .context("could not start qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers = [
        forward(child.stdout.take().context("no qemu stdout")?, tx.clone()),
        forward(child.stderr.take().context("no qemu stderr")?, tx),
    ];
    let mut lines = Vec::new();
    let mut booted = false;
    let mut last_line_at: Option<Instant> = None;
    let end = loop {
        let now = Instant::now();
        let limit = match last_line_at {
            Some(at) => (at + LINGER - started).min(b.timeout),
            None if booted => b.timeout,
            None => b.init_deadline.min(b.timeout),
        };
        let Some(left) = limit.checked_sub(now - started) else {
            kill(&mut child);
            break match (last_line_at, booted) {
                (Some(_), _) => End::Lingered,
                (None, true) => End::TimedOut,
                (None, false) => End::NoBoot,
            };
        };
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) => {
                booted |= line.contains(BOOTED);
                if last_line_at.is_none() && (b.is_last_line)(&line) {
                    last_line_at = Some(Instant::now());
                }
                eprintln!("{}{line}", b.prefix);
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both pipes closed: qemu is gone.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break End::Exited(child.wait().context("waiting for qemu")?);
            }
        }
    };
    for reader in readers {
        let _ = reader.join();
    }
    Ok(Console {
        lines,
        end,
        elapsed: started.elapsed(),
    })
}

/// Sends each line of `pipe` (console lines end in `\r\n`) until it closes.
fn forward(
    pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\r', '\n']).replace('\r', "");
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
