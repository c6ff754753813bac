//! Choosing the backend: `auto` tries the LSM programs and falls back on any refusal.

use std::{fs, io};

use aya::{Btf, Ebpf};

use super::{LoadError, attach::load_lsm};
use crate::kernel::{
    Backend, BackendChoice,
    mounts::{self, MountError},
    programs::{Attach, PROGRAMS},
};

/// Why BPF LSM cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum LsmUnavailable {
    #[error(transparent)]
    Securityfs(MountError),
    #[error("cannot read the LSM list: {0}")]
    LsmList(#[source] io::Error),
    #[error("bpf is not among the active LSMs ({active})")]
    NotActive { active: String },
    #[error("the kernel refused {program}: {}", refusal(source))]
    Refused {
        program: &'static str,
        #[source]
        source: Box<LoadError>,
    },
}

/// The kernel's refusal without aya's trailing verifier log header, which is empty for
/// an EPERM refusal.
fn refusal(e: &LoadError) -> String {
    let e = e.to_string();
    e.trim_end()
        .trim_end_matches("Verifier output:")
        .trim_end()
        .trim_end_matches('.')
        .to_owned()
}

/// Picks the backend, loading the LSM programs when it is `lsm`; also says why.
pub(super) fn choose(
    ebpf: &mut Ebpf,
    btf: &Btf,
    choice: BackendChoice,
) -> Result<(Backend, String), LoadError> {
    if choice == BackendChoice::Portable {
        return Ok((Backend::Portable, "requested".into()));
    }
    match lsm_works(ebpf, btf) {
        Ok(()) => Ok((
            Backend::Lsm,
            if choice == BackendChoice::Lsm {
                "requested"
            } else {
                "BPF LSM available"
            }
            .into(),
        )),
        Err(why) if choice == BackendChoice::Lsm => Err(LoadError::LsmUnavailable(why)),
        Err(why) => Ok((Backend::Portable, format!("lsm unavailable: {why}"))),
    }
}

/// Whether BPF LSM is active, and the kernel loads every LSM program.
fn lsm_works(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), LsmUnavailable> {
    let fs = mounts::ensure_securityfs().map_err(LsmUnavailable::Securityfs)?;
    let lsms = fs::read_to_string(fs.join("lsm")).map_err(LsmUnavailable::LsmList)?;
    if !lsms.trim().split(',').any(|l| l == "bpf") {
        return Err(LsmUnavailable::NotActive {
            active: lsms.trim().to_owned(),
        });
    }
    // Only the LSM programs tell whether BPF LSM works; the others load on attach.
    for program in &PROGRAMS {
        if let Attach::Lsm(hook) = program.attach {
            load_lsm(ebpf, btf, program.name, hook).map_err(|e| LsmUnavailable::Refused {
                program: program.name,
                source: Box::new(e),
            })?;
        }
    }
    Ok(())
}
