//! Booting the guests: one per kernel and backend, side by side under TCG.

use std::path::Path;

use super::{
    AccelArg, Options, Run, append, debian, init_deadline, judge, note_kvm_unusable,
    qemu::{self, Accel},
    result_line,
};

/// Boots every kernel once per backend, falling back from KVM to TCG at the first
/// boot that KVM does not bring to `/init` (with `--accel auto`). Under TCG each guest
/// is one emulated CPU on one host thread, so the boots run side by side, as many at
/// once as the host has cores: the suite's wall time is then that of its slowest boot.
pub(super) fn boot_all(
    opts: &Options,
    kernels: &[debian::Kernel],
    initrd: &Path,
    cache: &Path,
    accel: &mut Accel,
) -> anyhow::Result<Vec<Run>> {
    let jobs: Vec<(&debian::Kernel, &'static str)> = kernels
        .iter()
        .flat_map(|k| opts.backend.backends().iter().map(move |&b| (k, b)))
        .collect();
    let mut runs = Vec::new();
    let mut rest = &jobs[..];
    // Until a boot has shown whether KVM works, one at a time; a boot that KVM does not
    // bring to `/init` is run again under TCG, beside the others.
    while *accel == Accel::Kvm
        && let Some((&(kernel, backend), tail)) = rest.split_first()
    {
        if let Some(run) = boot_one(opts, kernel, backend, initrd, cache, accel)? {
            runs.push(run);
            rest = tail;
        }
    }
    let width = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for batch in rest.chunks(width) {
        let tcg = *accel;
        let results: Vec<anyhow::Result<Run>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&(kernel, backend)| {
                    s.spawn(move || {
                        let mut accel = tcg;
                        boot_one(opts, kernel, backend, initrd, cache, &mut accel)?
                            .ok_or_else(|| anyhow::anyhow!("a TCG boot asked to be run again"))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a boot's thread panicked")))
                })
                .collect()
        });
        for r in results {
            runs.push(r?);
        }
    }
    Ok(runs)
}

/// Boots `kernel` for `backend` once and judges its console; `None` when KVM (with
/// `--accel auto`) did not bring the guest to `/init`: `accel` is then TCG, and the boot
/// is to be run again.
fn boot_one(
    opts: &Options,
    kernel: &debian::Kernel,
    backend: &'static str,
    initrd: &Path,
    cache: &Path,
    accel: &mut Accel,
) -> anyhow::Result<Option<Run>> {
    eprintln!(
        "==> vm: kernel {} ({}), backend {backend}, {}",
        kernel.spec,
        kernel.release,
        accel.name()
    );
    let boot = qemu::Boot {
        vmlinuz: &kernel.vmlinuz,
        initrd,
        append: append(backend, &opts.filters),
        accel: *accel,
        memory_mb: opts.memory_mb,
        cpus: opts.cpus,
        timeout: opts.timeout,
        init_deadline: init_deadline(*accel),
        prefix: format!("[{} {backend}] ", kernel.spec),
        is_last_line: |line| result_line(line).is_some(),
    };
    let console = qemu::boot(&boot)?;
    if *accel == Accel::Kvm && opts.accel == AccelArg::Auto && !console.booted() {
        note_kvm_unusable(cache, &console)?;
        eprintln!("vm: KVM did not boot the guest; falling back to TCG from now on");
        *accel = Accel::Tcg;
        return Ok(None);
    }
    let run = judge(kernel.spec.clone(), backend, &console, opts.timeout);
    if let Some(why) = &run.failure {
        // One block, so that a boot running beside it does not split it.
        let mut block = format!(
            "==> vm: kernel {} backend {backend}: FAILED: {why}\n--- console tail ---\n",
            kernel.spec
        );
        for line in console.tail(60) {
            block.push_str(line);
            block.push('\n');
        }
        block.push_str("--- end of console tail ---");
        eprintln!("{block}");
    }
    Ok(Some(run))
}
