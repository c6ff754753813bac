//! The guest's root filesystem: an uncompressed `newc` cpio archive, written here rather
//! than with `cpio(1)` so that it can hold `/dev/console` without root (mknod) and so
//! that its contents do not depend on the host's file modes and times.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// One entry of the archive.
pub(super) enum Entry {
    Dir(&'static str),
    /// A regular file copied from the host.
    File {
        path: String,
        from: PathBuf,
        mode: u32,
    },
    /// A regular file with the given contents.
    Bytes {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// A character device node.
    CharDev {
        path: &'static str,
        major: u32,
        minor: u32,
    },
}

/// Writes `entries` as a `newc` archive at `out` and returns its size in bytes.
pub(super) fn write(out: &Path, entries: &[Entry]) -> anyhow::Result<u64> {
    let file = File::create(out).with_context(|| format!("could not create {}", out.display()))?;
    let mut w = Writer {
        out: BufWriter::with_capacity(1 << 20, file),
        offset: 0,
        next_ino: 1,
    };
    for entry in entries {
        match entry {
            Entry::Dir(path) => w.header(path, S_IFDIR | 0o755, 0, (0, 0))?,
            Entry::File { path, from, mode } => {
                let len = fs::metadata(from)
                    .with_context(|| format!("could not stat {}", from.display()))?
                    .len();
                let size = u32::try_from(len)
                    .with_context(|| format!("{} is too large for cpio", from.display()))?;
                w.header(path, S_IFREG | mode, size, (0, 0))?;
                let mut src = File::open(from)
                    .with_context(|| format!("could not open {}", from.display()))?;
                let copied = io::copy(&mut src, &mut w.out)
                    .with_context(|| format!("could not copy {}", from.display()))?;
                anyhow::ensure!(copied == len, "{} changed while packing", from.display());
                w.offset += copied;
                w.pad()?;
            }
            Entry::Bytes { path, data, mode } => {
                w.header(path, S_IFREG | mode, u32::try_from(data.len())?, (0, 0))?;
                w.put(data)?;
                w.pad()?;
            }
            Entry::Symlink { path, target } => {
                w.header(path, S_IFLNK | 0o777, u32::try_from(target.len())?, (0, 0))?;
                w.put(target.as_bytes())?;
                w.pad()?;
            }
            Entry::CharDev { path, major, minor } => {
                w.header(path, S_IFCHR | 0o600, 0, (*major, *minor))?;
            }
        }
    }
    w.header("TRAILER!!!", 0, 0, (0, 0))?;
    w.out
        .flush()
        .with_context(|| format!("could not write {}", out.display()))?;
    Ok(w.offset)
}

struct Writer {
    out: BufWriter<File>,
    offset: u64,
    next_ino: u32,
}

impl Writer {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Pads to the next multiple of 4, as `newc` requires after the name and the data.
    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.offset % 4) as usize;
        if rem != 0 {
            self.put(&[0; 3][..4 - rem])?;
        }
        Ok(())
    }

    fn header(&mut self, name: &str, mode: u32, size: u32, rdev: (u32, u32)) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let name_size = u32::try_from(name.len() + 1).map_err(io::Error::other)?;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check.
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut head = String::with_capacity(110);
        head.push_str("070701");
        for field in fields {
            let _ = write!(head, "{field:08x}");
        }
        self.put(head.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }
}

/// A static x86-64 ELF executable of 132 bytes that exits with `code` at once: the
/// guest's `/bin/true` and `/bin/false`. Busybox cannot stand in for them, because the
/// tests copy `/bin/true` under new names and busybox picks its applet by name.
pub(super) fn exit_elf(code: u8) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const EHDR: u16 = 64;
    const PHDR: u16 = 56;
    // mov edi, code; mov eax, 231 (exit_group); syscall
    let code = [0xbf, code, 0, 0, 0, 0xb8, 231, 0, 0, 0, 0x0f, 0x05];
    let entry = BASE + u64::from(EHDR + PHDR);
    let size = u64::from(EHDR + PHDR) + code.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // e_ident: ELF magic, 64-bit, little endian, version 1, System V ABI.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // e_machine: EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&entry.to_le_bytes()); // e_entry
    elf.extend_from_slice(&u64::from(EHDR).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&EHDR.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&PHDR.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    // One PT_LOAD segment, read + execute, mapping the whole file at BASE.
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R | X
    elf.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    elf.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    elf.extend_from_slice(&size.to_le_bytes()); // p_filesz
    elf.extend_from_slice(&size.to_le_bytes()); // p_memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    elf.extend_from_slice(&code);
    debug_assert_eq!(elf.len() as u64, size);
    elf
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn exit_elf_has_the_expected_layout() {
        let elf = exit_elf(1);
        assert_eq!(elf.len(), 132);
        assert_eq!(&elf[..4], b"\x7fELF");
        // e_entry points at the code right after the program header.
        assert_eq!(
            u64::from_le_bytes(elf[24..32].try_into().unwrap()),
            0x40_0000 + 120
        );
        assert_eq!(elf[121], 1, "exit code operand");
    }

    #[test]
    fn exit_elf_runs_on_this_host() {
        let dir = std::env::temp_dir().join(format!("xtask-elf-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for code in [0u8, 1] {
            let path = dir.join(format!("exit{code}"));
            fs::write(&path, exit_elf(code)).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            let status = std::process::Command::new(&path).status().unwrap();
            assert_eq!(status.code(), Some(i32::from(code)));
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("a.cpio");
        let size = write(
            &out,
            &[
                Entry::Dir("bin"),
                Entry::Bytes {
                    path: "bin/x".into(),
                    data: b"hello".to_vec(),
                    mode: 0o755,
                },
                Entry::Symlink {
                    path: "bin/sh".into(),
                    target: "busybox".into(),
                },
                Entry::CharDev {
                    path: "dev/console",
                    major: 5,
                    minor: 1,
                },
            ],
        )
        .unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(size % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        let _ = fs::remove_dir_all(dir);
    }
}
