//! Things a test makes and drops: connect targets and a scratch directory.

use std::path::PathBuf;

/// A TCP listener on loopback (v4 and v6) and a UDP socket, for connect targets.
pub struct Listeners {
    pub tcp4: std::net::TcpListener,
    pub tcp6: Option<std::net::TcpListener>,
    pub udp4: std::net::UdpSocket,
    pub udp6: Option<std::net::UdpSocket>,
}

impl Listeners {
    #[must_use]
    pub fn new() -> Self {
        Self {
            tcp4: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            tcp6: std::net::TcpListener::bind("[::1]:0").ok(),
            udp4: std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            udp6: std::net::UdpSocket::bind("[::1]:0").ok(),
        }
    }

    #[must_use]
    pub fn tcp4_port(&self) -> u16 {
        self.tcp4.local_addr().unwrap().port()
    }

    #[must_use]
    pub fn udp4_port(&self) -> u16 {
        self.udp4.local_addr().unwrap().port()
    }
}

impl Default for Listeners {
    fn default() -> Self {
        Self::new()
    }
}

/// A fresh directory of private files (distinct inodes), removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    #[must_use]
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("leash-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    /// A private copy of /bin/true: a file no grant names yet.
    #[must_use]
    pub fn copy_true(&self, name: &str) -> String {
        use std::os::unix::fs::PermissionsExt as _;
        let p = self.dir.join(name);
        std::fs::copy("/bin/true", &p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    #[must_use]
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
