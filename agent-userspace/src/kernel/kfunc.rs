//! The kfunc `bpf_send_signal_task` (Linux >= 6.13): signals a task other than the
//! current one, which lets a program kill a tagged process moved out of its task's
//! leash cgroups at the move, and a child whose tag could not be entered before it runs.
//!
//! aya 0.14 resolves no kfunc calls, so the kernel programs call a helper number no
//! helper has ([`SEND_SIGNAL_TASK_CALL`]) behind a load-time flag; where the kernel's
//! BTF has the kfunc, [`patch`] rewrites each such call into a kfunc call and the flag
//! is set. Elsewhere the call stays in code the verifier proves dead and drops.

use std::borrow::Cow;

use aya::Btf;
use aya_obj::btf::BtfKind;
use leash_common::offsets::SEND_SIGNAL_TASK_CALL;

/// The kfunc's name in the kernel's BTF.
pub(crate) const SEND_SIGNAL_TASK: &str = "bpf_send_signal_task";

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `BPF_PSEUDO_KFUNC_CALL` in the source register nibble (the high one on little
/// endian), the destination register 0.
const KFUNC_REGS: u8 = 0x20;

/// Why the kill at the move is not available.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoKfunc {
    #[error("the kernel has no kfunc {SEND_SIGNAL_TASK} (Linux >= 6.13)")]
    Absent,
    #[error("turned off for tests")]
    TurnedOff,
    #[error("the eBPF object has no call to rewrite")]
    NoCallSite,
}

/// The BTF id of `bpf_send_signal_task` in the kernel's BTF; `off` is the test-only
/// switch that reports it absent.
pub(crate) fn probe(btf: &Btf, off: bool) -> Result<u32, NoKfunc> {
    if off {
        return Err(NoKfunc::TurnedOff);
    }
    btf.id_by_type_name_kind(SEND_SIGNAL_TASK, BtfKind::Func)
        .map_err(|_| NoKfunc::Absent)
}

/// The placeholder call instruction as the compiler emits it (little endian).
fn placeholder() -> [u8; 8] {
    let mut ins = [CALL, 0, 0, 0, 0, 0, 0, 0];
    ins[4..].copy_from_slice(&SEND_SIGNAL_TASK_CALL.to_le_bytes());
    ins
}

/// `object` with every placeholder call made a kfunc call of `btf_id` (in vmlinux's
/// BTF: offset 0). The placeholder's 8 bytes cannot occur elsewhere by chance (an
/// 8-byte aligned instruction with a helper number no kernel has).
pub(crate) fn patch(object: &[u8], btf_id: u32) -> Result<Cow<'_, [u8]>, NoKfunc> {
    let from = placeholder();
    let mut to = [CALL, KFUNC_REGS, 0, 0, 0, 0, 0, 0];
    to[4..].copy_from_slice(&btf_id.to_le_bytes());
    let mut out = object.to_vec();
    let mut found = 0;
    let mut i = 0;
    while i + 8 <= out.len() {
        if out[i..i + 8] == from {
            out[i..i + 8].copy_from_slice(&to);
            found += 1;
            i += 8;
        } else {
            i += 1;
        }
    }
    if found == 0 {
        return Err(NoKfunc::NoCallSite);
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_calls_the_placeholder_and_patching_rewrites_every_call() {
        let patched = patch(crate::EBPF_OBJECT, 4242).unwrap();
        let from = placeholder();
        assert!(!patched.windows(8).any(|w| w == from));
        let to = [CALL, KFUNC_REGS, 0, 0, 0x92, 0x10, 0, 0];
        assert!(patched.windows(8).any(|w| w == to));
        assert_eq!(patch(&[0; 64], 1), Err(NoKfunc::NoCallSite));
    }

    #[test]
    fn this_kernel_has_the_kfunc_where_its_btf_says_so() {
        let Ok(btf) = Btf::from_sys_fs() else {
            return;
        };
        let listed = std::fs::read("/sys/kernel/btf/vmlinux").is_ok_and(|b| {
            b.windows(SEND_SIGNAL_TASK.len())
                .any(|w| w == SEND_SIGNAL_TASK.as_bytes())
        });
        assert_eq!(probe(&btf, false).is_ok(), listed);
        assert_eq!(probe(&btf, true), Err(NoKfunc::TurnedOff));
    }
}
