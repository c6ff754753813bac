//! Unix grants: names with the view they hold in (`UNIX_GRANTS`), and the socket
//! files path names named when granted (`UNIX_SOCKETS`, read by the lsm backend).

use std::path::Path;

use leash_common::{ExecGrant, ExecKey, UnixGrant, UnixKey, maps as names};

use super::{Maps, MapsError, op_err, removed};
use crate::grants::{SocketFile, UnixView};

impl Maps {
    pub fn grant_unix(&mut self, key: &UnixKey, grant: UnixGrant) -> Result<(), MapsError> {
        self.unix
            .insert(key, grant, 0)
            .map_err(op_err("insert", names::UNIX_GRANTS))
    }

    pub fn revoke_unix(&mut self, key: &UnixKey) -> Result<(), MapsError> {
        removed(self.unix.remove(key), names::UNIX_GRANTS)
    }

    pub fn grant_unix_socket(&mut self, key: &ExecKey, grant: ExecGrant) -> Result<(), MapsError> {
        self.unix_sockets
            .insert(key, grant, 0)
            .map_err(op_err("insert", names::UNIX_SOCKETS))
    }

    pub fn revoke_unix_socket(&mut self, key: &ExecKey) -> Result<(), MapsError> {
        removed(self.unix_sockets.remove(key), names::UNIX_SOCKETS)
    }

    /// Lets every task reach the unix socket bound at `path` (the kernel's task 0
    /// entries), forgetting earlier ones (a previous daemon's socket, whose inode
    /// number may since be reused): by that name in this process's mount namespace and
    /// root only, and on the lsm backend only the socket file bound there now. A task
    /// that re-points the name (a private mount namespace with a bind mount over it, a
    /// `chroot`) reaches nothing through this grant.
    pub fn grant_unix_everywhere(&mut self, path: &Path) -> Result<(), MapsError> {
        let view = UnixView::of(None, Path::new("/")).map_err(MapsError::OwnView)?;
        let old: Vec<UnixKey> = self
            .unix
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.task == 0)
            .collect();
        for k in old {
            self.revoke_unix(&k)?;
        }
        let old: Vec<ExecKey> = self
            .unix_sockets
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.task == 0)
            .collect();
        for k in old {
            self.revoke_unix_socket(&k)?;
        }
        let spec = format!("unix:{}", path.display());
        if let Some(Ok(crate::sockets::SocketGrant::Unix(name))) = crate::sockets::parse(&spec) {
            let grant = UnixGrant {
                expires_ns: 0,
                scope: view.scope(),
            };
            self.grant_unix(&name.key(0), grant)?;
        }
        if let Some(file) = path
            .to_str()
            .and_then(|p| SocketFile::at(Path::new("/"), p))
        {
            self.grant_unix_socket(&file.key(0), ExecGrant { expires_ns: 0 })?;
        }
        Ok(())
    }
}
