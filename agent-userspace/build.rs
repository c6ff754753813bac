//! Builds the eBPF object with nightly + bpf-linker (see `cargo xtask setup`).
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let meta = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("agent-userspace has no parent dir"))?
        .join("agent-ebpf");
    let root_dir = meta.to_str().context("non-UTF-8 path to agent-ebpf")?;
    aya_build::build_ebpf(
        [Package {
            name: "leash-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
