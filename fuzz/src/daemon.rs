//! A real daemon for the API router target: the kernel programs loaded with
//! `attach_scope: task` and nothing pinned (no program at the cgroup root, so no
//! untagged process is affected, and nothing outlives the fuzzer), a temporary state
//! directory and audit log, a policy with an approval rule, and bearer tokens on.
//!
//! The caller is a real process: a child forked to connect to a socket, whose peer
//! credentials the daemon reads as it does on accept. A request that attaches it to a
//! task, or ends it, makes it a caller in a task or a gone one: it is then replaced.

use std::{
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    sync::Arc,
};

use leash::{
    Enforcer, LoadOptions,
    api::peer::Peer,
    auth::Standing,
    config::Config,
    daemon::{AuditSink, Daemon},
    kernel::AttachScope,
};

/// The Ed25519 key of RFC 8037, appendix A: its public half is the daemon's JWKS, and
/// [`Fixture::token`] is signed with the private half.
const SECRET: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];
const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"fuzz","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

/// Agents `fuzz-*` may exec under /usr/bin, connect to 127.0.0.0/8, names under
/// example.com and unix sockets under /run; connects to 10.0.0.0/8 wait for an approver (root).
const POLICY: &str = r#"
approvers: {uids: [0]}
rules:
  - name: fuzz
    agents: ["fuzz-*"]
    max_ttl: 1h
    exec: [/usr/bin/]
    connect: ["127.0.0.0/8:*", "*.example.com:443/tcp"]
    unix: [/run/]
    read: [/srv]
    write: [/srv/out]
    approval:
      connect: ["10.0.0.0/8:*"]
"#;

/// The daemon, its state directory, and the process that calls it.
pub struct Fixture {
    pub daemon: Arc<Daemon>,
    pub dir: PathBuf,
    /// A valid token (agent `fuzz-a`, expiring in 2100): with tokens on, a caller
    /// without one may not create tasks.
    pub token: String,
    caller: Caller,
}

struct Caller {
    pid: libc::pid_t,
    peer: Peer,
}

impl Fixture {
    /// Loads the programs and starts the daemon (root only). Must run inside a
    /// multi-thread tokio runtime.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("leash-fuzz-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the fixture's directory");
        let jwks = dir.join("jwks.json");
        let policy = dir.join("policy.yaml");
        std::fs::write(&jwks, JWKS).unwrap();
        std::fs::write(&policy, POLICY).unwrap();
        let yaml = format!(
            "state_dir: {d}/state\naudit_log: {d}/audit.jsonl\nattach_scope: task\n\
             socket: {{path: {d}/leash.sock}}\n\
             tasks: {{kill_on_end: false}}\n\
             policy: {{file: {policy}}}\n\
             auth:\n  uids: [0]\n  tokens: {{jwks: {jwks}, issuer: https://issuer.test, audience: leash}}\n",
            d = dir.display(),
            policy = policy.display(),
            jwks = jwks.display(),
        );
        let config = Config::from_yaml(&yaml).expect("the fixture's config");
        let enforcer = Enforcer::load(&LoadOptions {
            attach_scope: AttachScope::Task,
            capacities: config.expose_capacities().to_vec(),
            ..LoadOptions::default()
        })
        .expect("cannot load the kernel programs (run as root)");
        let audit = AuditSink::open(&config.audit_log).expect("the audit log");
        let daemon =
            Daemon::new(enforcer, &config, audit, Arc::default()).expect("the daemon starts");
        let caller = Caller::spawn(&dir, &daemon);
        Self {
            daemon,
            dir,
            token: token("spiffe://leash.local/agent/fuzz-a"),
            caller,
        }
    }

    /// A new caller in place of the current one, which an input may have had killed
    /// (attached to a task that ended with `kill_on_end`: the kill can land after the
    /// check in [`Self::peer`]).
    pub fn renew(&mut self) {
        self.caller.stop();
        self.caller = Caller::spawn(&self.dir, &self.daemon);
    }

    /// The caller's peer, replaced first if it is no longer a live process outside
    /// every task.
    pub fn peer(&mut self) -> Peer {
        if !matches!(self.caller.peer.standing(&self.daemon).1, Standing::Host) {
            self.caller.stop();
            self.caller = Caller::spawn(&self.dir, &self.daemon);
        }
        self.caller.peer.clone()
    }
}

impl Caller {
    /// Forks a child that connects to a socket here and waits; the daemon's view of it
    /// is taken from the accepted end, as on the API socket.
    fn spawn(dir: &Path, daemon: &Daemon) -> Self {
        let path = dir.join("caller.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("the caller's socket");
        // Everything the child needs is made before the fork: it only makes syscalls.
        // SAFETY: sockaddr_un is plain bytes; zeroed is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_encoded_bytes();
        assert!(bytes.len() < addr.sun_path.len());
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: the child makes only async-signal-safe calls (prctl, socket, connect,
        // pause, _exit) on memory made before the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: as above; the address outlives these calls.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
                if fd < 0 || libc::connect(fd, (&raw const addr).cast(), len) != 0 {
                    libc::_exit(1);
                }
                loop {
                    libc::pause();
                }
            }
        }
        let (stream, _) = listener.accept().expect("the caller connects");
        stream.set_nonblocking(true).unwrap();
        let stream = tokio::net::UnixStream::from_std(stream).expect("a tokio stream");
        let peer = Peer::accept(&stream, daemon);
        Self { pid, peer }
    }

    fn stop(&self) {
        // SAFETY: our own child, by pid; reaped right after.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// A JWT-SVID for `sub`, signed with [`SECRET`].
fn token(sub: &str) -> String {
    use ed25519_dalek::Signer as _;
    let header = r#"{"alg":"EdDSA","kid":"fuzz","typ":"JWT"}"#;
    let claims =
        format!(r#"{{"sub":"{sub}","iss":"https://issuer.test","aud":"leash","exp":4102444800}}"#);
    let signed = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let key = ed25519_dalek::SigningKey::from_bytes(&SECRET);
    let sig = key.sign(signed.as_bytes()).to_bytes();
    format!("{signed}.{}", b64(&sig))
}

/// Base64url without padding (RFC 7515).
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}
