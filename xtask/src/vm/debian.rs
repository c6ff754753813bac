//! Debian packages for the guest: the kernel (`linux-image-<series>.*-amd64-unsigned`)
//! and `busybox-static`, fetched with `apt-get download` and unpacked under
//! `target/vm/`. What is unpacked stays there, so later runs (and CI with a cached
//! `target/`) neither download nor need the package lists again.

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::util;

/// A kernel to boot.
pub(super) struct Kernel {
    /// What the user asked for (`6.1`, or a path).
    pub spec: String,
    /// `6.1.0-57-amd64`, or the file name of a local image.
    pub release: String,
    /// Where it came from: a Debian package name, or the local path.
    pub source: String,
    pub vmlinuz: PathBuf,
}

/// Resolves `--kernel`: a Debian series (`6.1`, `6.12`) or a path to a `vmlinuz`/`bzImage`
/// or to a folder holding one (`boot/vmlinuz-*`, `vmlinuz*`, `arch/x86/boot/bzImage`).
pub(super) fn kernel(spec: &str, cache: &Path) -> anyhow::Result<Kernel> {
    if spec.contains('/') || Path::new(spec).exists() {
        return local_kernel(spec);
    }
    if !spec
        .split('.')
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    {
        bail!(
            "--kernel {spec:?}: give a Debian kernel series such as 6.1 or 6.12, or a path to a \
             vmlinuz (or a folder with one)"
        );
    }
    let dir = cache.join("kernels");
    if let Some(name) = newest(
        cached_names(&dir)
            .into_iter()
            .filter(|n| is_kernel(n, spec)),
    ) {
        let vmlinuz = find_vmlinuz(&dir.join(&name))?;
        return Ok(debian_kernel(spec, name, vmlinuz));
    }
    let name = newest(package_names(&format!("linux-image-{spec}"))?.into_iter().filter(|n| is_kernel(n, spec)))
        .with_context(|| {
            format!(
                "apt knows no package linux-image-{spec}.*-amd64-unsigned (apt-cache pkgnames \
                 linux-image-{spec}); this needs Debian's package lists (bookworm carries 6.1 and 6.12)"
            )
        })?;
    // Only boot/ is kept: the guest loads no modules, and they are 400 MB.
    unpack(&name, &dir, &["./boot"])?;
    let vmlinuz = find_vmlinuz(&dir.join(&name))?;
    Ok(debian_kernel(spec, name, vmlinuz))
}

fn debian_kernel(spec: &str, name: String, vmlinuz: PathBuf) -> Kernel {
    let release = name
        .trim_start_matches("linux-image-")
        .trim_end_matches("-unsigned")
        .to_owned();
    Kernel {
        spec: spec.to_owned(),
        release,
        source: name,
        vmlinuz,
    }
}

fn local_kernel(spec: &str) -> anyhow::Result<Kernel> {
    let path = Path::new(spec);
    let vmlinuz = if path.is_dir() {
        find_vmlinuz(path)?
    } else if path.is_file() {
        path.to_owned()
    } else {
        bail!("--kernel {spec}: no such file or folder");
    };
    let vmlinuz = vmlinuz
        .canonicalize()
        .with_context(|| format!("could not resolve {}", vmlinuz.display()))?;
    let release = vmlinuz
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_owned()
        })
        .unwrap_or_default();
    Ok(Kernel {
        spec: spec.to_owned(),
        release,
        source: vmlinuz.display().to_string(),
        vmlinuz,
    })
}

/// `linux-image-6.1.0-57-amd64-unsigned` is of series `6.1`; `…-6.12.…`, `…-cloud-amd64-…`
/// and `…-rt-amd64-…` are not.
fn is_kernel(name: &str, series: &str) -> bool {
    let Some(rest) = name.strip_prefix("linux-image-") else {
        return false;
    };
    let Some(after) = rest.strip_prefix(series) else {
        return false;
    };
    (after.starts_with('.') || after.starts_with('-'))
        && name.ends_with("-amd64-unsigned")
        && !name.ends_with("-cloud-amd64-unsigned")
        && !name.ends_with("-rt-amd64-unsigned")
}

/// The highest of `names`, comparing runs of digits as numbers (`-57` after `-9`).
fn newest(names: impl Iterator<Item = String>) -> Option<String> {
    names.max_by(|a, b| natural_cmp(a, b))
}

fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let na = std::str::from_utf8(&a[..da])
                    .unwrap_or("0")
                    .trim_start_matches('0');
                let nb = std::str::from_utf8(&b[..db])
                    .unwrap_or("0")
                    .trim_start_matches('0');
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// Folders under `dir` that a previous run unpacked completely.
fn cached_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(COMPLETE).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Marks an unpacked package as complete: an interrupted unpack is redone.
const COMPLETE: &str = ".complete";

fn find_vmlinuz(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    for sub in [dir.join("boot"), dir.to_owned()] {
        if let Ok(entries) = fs::read_dir(&sub) {
            candidates.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.is_file()
                            && p.file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
                    }),
            );
        }
    }
    let bz = dir.join("arch/x86/boot/bzImage");
    if bz.is_file() {
        candidates.push(bz);
    }
    candidates.sort();
    match candidates.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no vmlinuz* in {0} or {0}/boot (nor arch/x86/boot/bzImage)",
            dir.display()
        ),
        many => bail!(
            "more than one kernel image in {}: {}; pass the one to boot",
            dir.display(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The static busybox of `busybox-static`, unpacked under `cache/debs/busybox-static/`.
pub(super) fn busybox(cache: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache.join("debs");
    let bin = dir.join("busybox-static").join("bin").join("busybox");
    if dir.join("busybox-static").join(COMPLETE).exists() && bin.is_file() {
        return Ok(bin);
    }
    // The package lists must know it; ask once so the error below is accurate.
    if package_names("busybox-static")?
        .iter()
        .all(|n| n != "busybox-static")
    {
        bail!("apt knows no package busybox-static");
    }
    unpack("busybox-static", &dir, &["./bin/busybox"])?;
    Ok(bin)
}

/// Package names starting with `prefix`, running `apt-get update` first when the lists
/// have none (a fresh container ships without lists).
fn package_names(prefix: &str) -> anyhow::Result<Vec<String>> {
    let list = || -> anyhow::Result<Vec<String>> {
        Ok(
            util::output(Command::new("apt-cache").args(["pkgnames", prefix]))?
                .lines()
                .map(str::to_owned)
                .collect(),
        )
    };
    let names = list()?;
    if !names.is_empty() {
        return Ok(names);
    }
    if !util::is_root()? {
        bail!(
            "apt's package lists have nothing named {prefix}*; run `sudo apt-get update` (or \
             this command as root)"
        );
    }
    util::apt_update()?;
    list()
}

/// `apt-get download NAME` into `dir`, then unpacks `members` of it into `dir/NAME/`
/// and deletes the .deb.
fn unpack(name: &str, dir: &Path, members: &[&str]) -> anyhow::Result<()> {
    let downloads = dir.join("downloads");
    fs::create_dir_all(&downloads)
        .with_context(|| format!("could not create {}", downloads.display()))?;
    eprintln!("vm: fetching {name}");
    util::run(
        Command::new("apt-get")
            .args(["download", "-q", name])
            .current_dir(&downloads)
            .stdin(Stdio::null()),
    )?;
    let deb = fs::read_dir(&downloads)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&format!("{name}_")) && n.ends_with(".deb")
            })
        })
        .with_context(|| {
            format!(
                "apt-get download left no {name}_*.deb in {}",
                downloads.display()
            )
        })?;
    let staging = dir.join(format!("{name}.partial"));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    // dpkg-deb -x would unpack everything; only `members` are needed.
    let script = format!(
        "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" {}",
        members.join(" ")
    );
    util::run(
        Command::new("sh")
            .args(["-c", &script, "unpack"])
            .arg(&deb)
            .arg(&staging),
    )?;
    fs::write(staging.join(COMPLETE), format!("{}\n", deb.display()))?;
    let target = dir.join(name);
    let _ = fs::remove_dir_all(&target);
    fs::rename(&staging, &target)
        .with_context(|| format!("could not move {} into place", staging.display()))?;
    fs::remove_file(&deb).with_context(|| format!("could not remove {}", deb.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_package_names() {
        assert!(is_kernel("linux-image-6.1.0-57-amd64-unsigned", "6.1"));
        assert!(!is_kernel(
            "linux-image-6.12.117+deb12-amd64-unsigned",
            "6.1"
        ));
        assert!(is_kernel(
            "linux-image-6.12.117+deb12-amd64-unsigned",
            "6.12"
        ));
        assert!(!is_kernel(
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
            "6.1"
        ));
        assert!(!is_kernel("linux-image-6.1.0-57-rt-amd64-unsigned", "6.1"));
        assert!(!is_kernel("linux-image-6.1.0-57-amd64", "6.1"));
        assert!(!is_kernel("linux-image-6.1.0-57-amd64-dbg", "6.1"));
    }

    #[test]
    fn newest_compares_numbers() {
        let names = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.1.0-47-amd64-unsigned",
        ];
        assert_eq!(
            newest(names.iter().map(|s| (*s).to_owned())).as_deref(),
            Some("linux-image-6.1.0-57-amd64-unsigned")
        );
        assert_eq!(
            natural_cmp(
                "linux-image-6.12.117+deb12-amd64-unsigned",
                "linux-image-6.12.99+deb12-amd64-unsigned"
            ),
            Ordering::Greater
        );
    }
}
