//! The seccomp filter `leash run` puts on the command: any i386 or x32 system call
//! kills the whole process before the call runs.
//!
//! The kernel guard (`compat_sys_enter`, docs/security.md class 18) kills a tagged
//! caller too, but a tracepoint cannot refuse: that first call completes. Seccomp
//! runs earlier in the entry path, and a filter is inherited by every descendant and
//! can never be removed. The guard stays: processes that join a task through the API
//! carry no filter.
//!
//! Six instructions written out here rather than a filter crate's: the check is on the
//! architecture and one bit of the number, which rule-per-syscall builders do not
//! express.

use std::io;

/// `AUDIT_ARCH_X86_64`: `EM_X86_64` (0x3e), 64-bit, little-endian.
const AUDIT_ARCH_X86_64: u32 = 0x3e | 0x8000_0000 | 0x4000_0000;
/// `__X32_SYSCALL_BIT`.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;

const fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter: native `x86_64` calls pass, anything else kills the process.
fn program() -> [libc::sock_filter; 6] {
    // The classic BPF opcodes are small constants; the casts cannot truncate.
    #[allow(clippy::cast_possible_truncation)]
    let (ld, jeq, jset, ret) = (
        (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
        (libc::BPF_RET | libc::BPF_K) as u16,
    );
    [
        stmt(ld, ARCH),
        // Another architecture's table (i386): to the kill.
        jump(jeq, AUDIT_ARCH_X86_64, 0, 3),
        stmt(ld, NR),
        // The x32 bit: to the kill; else allow.
        jump(jset, X32_SYSCALL_BIT, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ret, libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

/// Installs the filter on the calling thread (and so on everything it execs and
/// forks). Without `CAP_SYS_ADMIN` the kernel requires `no_new_privs` for a filter;
/// this does not set it, and returns the error (`EACCES`) instead: the kernel guard
/// still stops such a caller.
pub(crate) fn install() -> io::Result<()> {
    if !cfg!(target_arch = "x86_64") {
        return Ok(());
    }
    let filter = program();
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies
    // the program before it returns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &raw const prog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter on `(arch, nr)` as the kernel's classic BPF would.
    fn verdict(arch: u32, nr: u32) -> u32 {
        let p = program();
        let (mut pc, mut acc) = (0, 0);
        loop {
            let i = p[pc];
            let class = u32::from(i.code) & 0x07;
            let op = u32::from(i.code) & 0xf0;
            match class {
                c if c == libc::BPF_LD => {
                    acc = if i.k == ARCH { arch } else { nr };
                    pc += 1;
                }
                c if c == libc::BPF_JMP => {
                    let taken = match op {
                        o if o == libc::BPF_JEQ => acc == i.k,
                        o if o == libc::BPF_JSET => acc & i.k != 0,
                        _ => panic!("unexpected jump {op:#x}"),
                    };
                    pc += 1 + usize::from(if taken { i.jt } else { i.jf });
                }
                c if c == libc::BPF_RET => return i.k,
                _ => panic!("unexpected class {class:#x}"),
            }
        }
    }

    #[test]
    fn the_filter_kills_other_tables_and_passes_native_calls() {
        const I386: u32 = 3 | 0x4000_0000;
        let allow = libc::SECCOMP_RET_ALLOW;
        let kill = libc::SECCOMP_RET_KILL_PROCESS;
        assert_eq!(verdict(AUDIT_ARCH_X86_64, 39), allow, "getpid");
        assert_eq!(verdict(AUDIT_ARCH_X86_64, 0), allow, "read");
        assert_eq!(verdict(AUDIT_ARCH_X86_64, 462), allow);
        assert_eq!(verdict(I386, 0x14), kill, "i386 getpid");
        assert_eq!(verdict(I386, 0), kill);
        assert_eq!(
            verdict(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 0x27),
            kill,
            "x32"
        );
        assert_eq!(verdict(AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 512), kill);
    }
}
