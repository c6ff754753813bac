//! i386 system calls from this 64-bit process (`int $0x80`), which the per-syscall
//! tracepoints never see. Each runs in a forked child (a denial kills the caller); a
//! kernel without ia32 emulation faults the child (`signal 11`). The kernel takes only
//! the low 32 bits of every argument, so whatever a call points at lives in memory
//! mapped below 4 GiB.

use super::attacks::in_child;

const GETPID: u32 = 20;
const KILL: u32 = 37;
const SOCKETCALL: u32 = 102;
const BPF: u32 = 357;
const SOCKET: u32 = 359;
/// `socketcall`'s `SYS_SOCKET`.
const SYS_SOCKET: u32 = 1;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_OBJ_GET: u32 = 7;
const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;

/// Runs one compat command; `None` if `w[0]` is not one.
pub(crate) fn run(w: &[String]) -> Option<String> {
    let arg = |i: usize| w.get(i).map_or("", String::as_str);
    let num = |i: usize| arg(i).parse::<i64>().unwrap_or(-1) as u32;
    let out = match arg(0) {
        "compat-getpid" => in_child(|| {
            // SAFETY: getpid takes no argument.
            let pid = unsafe { int80(GETPID, [0; 5]) };
            // SAFETY: the native getpid, to compare.
            let native = unsafe { libc::getpid() };
            if pid == native {
                "ok".into()
            } else {
                errno_or(pid, || {
                    format!("error compat getpid {pid}, native {native}")
                })
            }
        }),
        "compat-kill" => in_child(|| {
            // SAFETY: kill(pid, sig) takes no pointer.
            outcome(unsafe { int80(KILL, [num(1), num(2), 0, 0, 0]) })
        }),
        "compat-socket" => in_child(|| {
            // SAFETY: socket(family, type, protocol) takes no pointer.
            let fd = unsafe { int80(SOCKET, [num(1), num(2), num(3), 0, 0]) };
            close_outcome(fd)
        }),
        "compat-socketcall" => in_child(|| {
            let Some(low) = Low::map() else {
                return format!("error mmap errno {}", super::errno());
            };
            let args = low.put(0, &[num(1), num(2), num(3)]);
            // SAFETY: socketcall(SYS_SOCKET, args) reads three u32 below 4 GiB.
            let fd = unsafe { int80(SOCKETCALL, [SYS_SOCKET, args, 0, 0, 0]) };
            close_outcome(fd)
        }),
        "compat-untag" => in_child(|| compat_untag(arg(1))),
        // A native `syscall` with bit 30 of the number set: the x32 table.
        "x32-getpid" => in_child(|| {
            // SAFETY: getpid takes no argument; without the x32 ABI: ENOSYS.
            let pid = unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) };
            // SAFETY: the native getpid, to compare.
            if pid == i64::from(unsafe { libc::getpid() }) {
                "ok".into()
            } else {
                super::outcome(pid as i32)
            }
        }),
        _ => return None,
    };
    Some(out)
}

/// `bpf(BPF_OBJ_GET)` of a pinned process map, then `BPF_MAP_DELETE_ELEM` of the
/// parent's (the probe's) thread id in it: what untags a task's process. The outcome
/// is the delete's (`errno 2`: the parent was not in the map).
fn compat_untag(pin: &str) -> String {
    let Some(low) = Low::map() else {
        return format!("error mmap errno {}", super::errno());
    };
    let mut path = pin.as_bytes().to_vec();
    path.push(0);
    let path = low.put(256, &path);
    // `bpf_attr` for BPF_OBJ_GET: pathname (u64), bpf_fd, file_flags, path_fd.
    let attr = low.put(0, &[path, 0, 0, 0, 0, 0]);
    // SAFETY: bpf(cmd, attr, size) reads the attribute and the path below 4 GiB.
    let fd = unsafe { int80(BPF, [BPF_OBJ_GET, attr, 24, 0, 0]) };
    if fd < 0 {
        return outcome(fd);
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() } as u32;
    let key = low.put(128, &[parent]);
    // `bpf_attr` for map element calls: map_fd, pad, key (u64), value (u64), flags.
    let attr = low.put(64, &[fd as u32, 0, key, 0, 0, 0, 0, 0]);
    // SAFETY: as above, the attribute and the key below 4 GiB.
    outcome(unsafe { int80(BPF, [BPF_MAP_DELETE_ELEM, attr, 32, 0, 0]) })
}

/// One page mapped below 4 GiB (`MAP_32BIT`), for what compat calls point at; left
/// mapped until the child exits.
struct Low(*mut u8);

impl Low {
    fn map() -> Option<Self> {
        // SAFETY: a fresh anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then(|| Self(p.cast()))
    }

    /// Copies `data` to byte `offset` of the page and returns its 32-bit address.
    fn put<T: Copy>(&self, offset: usize, data: &[T]) -> u32 {
        let bytes = size_of_val(data);
        assert!(offset + bytes <= 4096, "past the page");
        // SAFETY: inside our own page, which nothing else uses.
        unsafe {
            let dst = self.0.add(offset);
            std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), dst, bytes);
            dst as usize as u32
        }
    }
}

fn outcome(rc: i32) -> String {
    errno_or(rc, || "ok".into())
}

fn errno_or(rc: i32, ok: impl FnOnce() -> String) -> String {
    if (-4095..0).contains(&rc) {
        format!("errno {}", -rc)
    } else {
        ok()
    }
}

fn close_outcome(fd: i32) -> String {
    if fd >= 0 {
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
    }
    outcome(fd)
}

/// An i386 system call: number in eax, arguments in ebx, ecx, edx, esi, edi (the low
/// 32 bits); the result comes back in eax (`-errno` on failure).
///
/// # Safety
///
/// The call must be safe to make with these arguments: any pointer among them must
/// point below 4 GiB at what the call reads or writes.
unsafe fn int80(nr: u32, a: [u32; 5]) -> i32 {
    let ret: u32;
    // SAFETY: the caller vouches for the call; rbx is LLVM's, so it is saved around
    // the call; r8-r11 are declared clobbered in case the kernel does not keep them.
    unsafe {
        std::arch::asm!(
            "push rbx",
            "mov ebx, {b:e}",
            "int 0x80",
            "pop rbx",
            b = in(reg) a[0],
            inlateout("eax") nr => ret,
            in("ecx") a[1],
            in("edx") a[2],
            in("esi") a[3],
            in("edi") a[4],
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
        );
    }
    ret as i32
}
