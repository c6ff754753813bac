//! Grant specs as callers send them: connect (addresses, names, wildcards), unix and
//! socket, file (`read:`/`write:`), the policy's `KIND:SPEC` and exec paths. A spec
//! that parses prints back to text that parses to the same value.
#![no_main]

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use leash::{
    dns::NameGrant,
    files::parse_grant,
    grants::{ConnectSpec, Host, compile_net, resolve_exec_in},
    policy::GrantSpec,
    sockets::{self, FAMILIES, SocketGrant},
};
use leash_common::grant::{PROTO_TCP, PROTO_UDP};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    connect(s);
    socket(s);
    file(s);
    ceiling(s);
    exec(s);
});

fn connect(s: &str) {
    let Ok(spec) = s.parse::<ConnectSpec>() else {
        return;
    };
    let text = spec.to_string();
    let again: ConnectSpec = text
        .parse()
        .unwrap_or_else(|e| panic!("{s:?} printed as {text:?}, which does not parse: {e}"));
    assert_eq!(again, spec, "{s:?} -> {text:?}");
    assert!(spec.port_lo <= spec.port_hi, "{spec:?}");
    assert!(spec.protos != 0 && spec.protos & !(PROTO_TCP | PROTO_UDP) == 0);
    match &spec.host {
        Host::Net(ip, prefix) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            assert!(*prefix <= max, "{spec:?}");
            let grants = spec.to_net_grants(0);
            assert_eq!(grants.len(), 1);
            assert!(grants[0].prefix <= 128);
            compile_net(1, &grants).expect("one grant always fits");
        }
        Host::Name(name) => {
            assert!(plain_name(name), "{s:?}: name {name:?}");
            assert!(spec.to_net_grants(0).is_empty());
            let g = NameGrant::parse(s, 0).expect("a name grant");
            assert!(g.covers(name), "{s:?} does not cover its own name");
            assert!(!g.covers(&format!("x.{name}")));
        }
        Host::Wildcard(apex) => {
            assert!(plain_name(apex), "{s:?}: apex {apex:?}");
            let g = NameGrant::parse(s, 0).expect("a name grant");
            assert!(g.covers(&format!("x.{apex}")));
            assert!(!g.covers(apex), "{s:?} covers its apex");
        }
    }
    // An address never parses as a name grant.
    if let Host::Net(..) = spec.host {
        assert!(NameGrant::parse(s, 0).is_none());
    }
}

/// Lowercase ASCII labels of letters, digits and inner dashes; no trailing dot.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn socket(s: &str) {
    let Some(Ok(grant)) = sockets::parse(s) else {
        return;
    };
    let text = match &grant {
        SocketGrant::Unix(name) => {
            let key = name.key(9);
            assert_eq!(key.task, 9);
            format!("unix:{name}")
        }
        SocketGrant::Family(bit) => {
            let (name, _) = FAMILIES
                .iter()
                .find(|(_, b)| b == bit)
                .expect("a known family");
            format!("socket:{name}")
        }
    };
    let again = sockets::parse(&text)
        .unwrap_or_else(|| panic!("{s:?} printed as {text:?}, not a socket grant"))
        .unwrap_or_else(|e| panic!("{s:?} printed as {text:?}: {e}"));
    assert_eq!(again, grant, "{s:?} -> {text:?}");
    // A socket grant is never also an address grant.
    assert!(s.parse::<ConnectSpec>().is_err() || !s.trim().starts_with("unix:"));
}

fn file(s: &str) {
    let Ok(g) = parse_grant(s) else {
        return;
    };
    assert!(g.path.starts_with('/') && !g.path.contains('\0'), "{g:?}");
    let text = format!("{}:{}", if g.write { "write" } else { "read" }, g.path);
    assert_eq!(parse_grant(&text).expect("round trip"), g);
}

fn ceiling(s: &str) {
    let Ok(g) = s.parse::<GrantSpec>() else {
        return;
    };
    let text = format!("{}:{}", g.kind, g.spec);
    assert_eq!(text.parse::<GrantSpec>().expect("round trip"), g);
}

/// A root made once: an ELF-looking binary, a script, a data file, a FIFO, a directory
/// of them and a symlink out of the root.
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("leash-fuzz-exec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe = |p: PathBuf, body: &[u8]| {
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        exe(bin.join("tool"), b"\x7fELF\x02\x01\x01");
        exe(bin.join("run.sh"), b"#!/bin/sh\n");
        std::fs::write(bin.join("data"), b"x").unwrap();
        let fifo =
            std::ffi::CString::new(bin.join("pipe").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that lives for the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o755) }, 0);
        std::os::unix::fs::symlink("/etc", dir.join("out")).unwrap();
        std::os::unix::fs::symlink("bin/tool", dir.join("link")).unwrap();
        dir
    })
}

fn exec(s: &str) {
    // Only paths in the made root: the fuzzer must not wander the host's files.
    if !s.starts_with('/') || s.len() > 256 {
        return;
    }
    let Ok(files) = resolve_exec_in(root(), s) else {
        return;
    };
    assert!(!files.is_empty());
    if let Some(dir) = s.strip_suffix("/**") {
        // A tree: the directory itself, by a clean path, and nothing else.
        let [f] = files.as_slice() else {
            panic!("{s:?} granted {files:?}");
        };
        assert!(f.tree && f.path == Path::new(dir), "{s:?} granted {f:?}");
        assert!(
            dir[1..].split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
            "{s:?} is not clean"
        );
        let real = root().join(in_root(&f.path));
        assert!(real.is_dir(), "{s:?} granted {real:?}, not a directory");
        return;
    }
    for f in &files {
        assert!(!f.tree, "{s:?} granted {f:?}");
        let real = root().join(in_root(&f.path));
        let meta = std::fs::metadata(&real)
            .unwrap_or_else(|e| panic!("{s:?} granted {real:?}, which is not there: {e}"));
        assert!(
            meta.is_file() && meta.permissions().mode() & 0o111 != 0,
            "{f:?}"
        );
        if s.ends_with('/') {
            assert!(f.path.starts_with(s), "{s:?} granted {f:?} outside it");
        }
    }
}

/// `path` as a lookup inside a root sees it: `..` at the root stays there.
fn in_root(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}
