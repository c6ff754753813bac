//! `cargo xtask build [--release]`.

use crate::util;

pub(crate) fn run(release: bool) -> anyhow::Result<()> {
    // agent-userspace's build script builds the eBPF object with bpf-linker.
    util::require_bpf_linker()?;
    let mut cmd = util::cargo();
    cmd.arg("build").args(util::HOST_WORKSPACE);
    if release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)
}
