//! Grant specs resolved now: exec paths to the inodes they name (through the caller's
//! root), connect specs to networks (a name to none: its addresses are learned from
//! the task's queries), `unix:` names (with the view a path name holds in, and the
//! socket it names) and `socket:` families.

use std::path::Path;

use super::{FileRecord, GrantRecord, NetRecord, RegistryError, wall_of_boot_ns};
use crate::{
    grants::{self, ConnectSpec, SocketFile, UnixView},
    protocol::GrantKind,
    sockets::{self, SocketGrant},
};

/// Where a request's names are resolved: the caller's root directory (a path to it),
/// and the caller's mount namespace and root, where a `unix:` path grant will hold.
#[derive(Clone, Copy, Debug)]
pub struct ResolveIn<'a> {
    pub root: &'a Path,
    /// `None`: it could not be read, and `unix:` path grants are refused.
    pub view: Option<UnixView>,
}

impl ResolveIn<'static> {
    /// This process's own root and view.
    #[must_use]
    pub fn own() -> Self {
        let root = Path::new("/");
        Self {
            root,
            view: UnixView::of(None, root).ok(),
        }
    }
}

/// Resolves a grant spec now (paths to inodes; names are never looked up).
pub fn resolve(
    kind: GrantKind,
    spec: &str,
    id: String,
    expires_ns: u64,
    at: &ResolveIn<'_>,
) -> Result<GrantRecord, RegistryError> {
    let root = at.root;
    let mut rec = GrantRecord {
        id,
        kind,
        spec: spec.to_owned(),
        expires_ns,
        expires_at: (expires_ns != 0).then(|| wall_of_boot_ns(expires_ns)),
        files: Vec::new(),
        nets: Vec::new(),
        pending_ns: 0,
        unix: Vec::new(),
        unix_view: None,
        unix_socket: None,
        families: 0,
        requested_by: None,
        derived_from: Vec::new(),
    };
    match kind {
        GrantKind::Exec => {
            rec.files = grants::resolve_exec_in(root, spec)?
                .into_iter()
                .map(|f| FileRecord {
                    path: f.path.display().to_string(),
                    dev: f.dev,
                    ino: f.ino,
                    script: f.script,
                    state: (!f.tree).then_some(f.state),
                    tree: f.tree,
                })
                .collect();
        }
        GrantKind::Connect => match sockets::parse(spec).transpose()? {
            Some(SocketGrant::Unix(name)) => {
                let name = name.to_string();
                if name.starts_with('/') {
                    let view = at.view.ok_or_else(|| {
                        RegistryError::BadRequest(format!(
                            "{spec}: cannot read the caller's mount namespace and root, where a unix path grant holds"
                        ))
                    })?;
                    rec.unix_view = Some(view);
                    rec.unix_socket = SocketFile::at(root, &name);
                }
                rec.unix.push(name);
            }
            Some(SocketGrant::Family(bit)) => rec.families = bit,
            None => rec.nets = net_records(spec)?,
        },
    }
    Ok(rec)
}

fn net_records(spec: &str) -> Result<Vec<NetRecord>, RegistryError> {
    let parsed: ConnectSpec = spec.parse()?;
    Ok(parsed
        .to_net_grants(0)
        .into_iter()
        .map(|n| NetRecord {
            addr: n.addr,
            prefix: n.prefix,
            port_lo: n.rule.port_lo,
            port_hi: n.rule.port_hi,
            protos: n.rule.protos,
        })
        .collect())
}
