//! `cargo xtask run [-- ARGS]`: builds and runs `leash daemon` with the embedded defaults.

use std::os::unix::process::CommandExt as _;
use std::process::Command;

use anyhow::bail;

use crate::setup;
use crate::util;

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    if !util::is_root()? {
        bail!(
            "`leash daemon` loads and attaches BPF programs and must run as root \
             (sudo -E cargo xtask run)"
        );
    }
    setup::run(setup::Mode::Implicit)?;
    util::run(util::cargo().args(["build", "-p", "leash"]))?;

    let bin = util::target_dir().join("debug").join("leash");
    let mut cmd = Command::new(&bin);
    cmd.arg("daemon").args(args);
    eprintln!("$ {}", util::display(&cmd));
    // Replaces this process, so signals reach the daemon directly and its exit status
    // is ours. exec only returns on failure.
    let err = cmd.exec();
    Err(anyhow::Error::new(err).context(format!("could not exec {}", bin.display())))
}
