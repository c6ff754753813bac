//! Grant specs resolved now: exec paths to the inodes they name (through the caller's
//! root), connect specs to networks (a name to none: its addresses are learned from
//! the task's queries), `unix:` names and `socket:` families.

use std::path::Path;

use super::{FileRecord, GrantRecord, NetRecord, RegistryError, wall_of_boot_ns};
use crate::{
    grants::{self, ConnectSpec},
    protocol::GrantKind,
    sockets::{self, SocketGrant},
};

/// Resolves a grant spec now (paths to inodes; names are never looked up).
pub fn resolve(
    kind: GrantKind,
    spec: &str,
    id: String,
    expires_ns: u64,
    root: &Path,
) -> Result<GrantRecord, RegistryError> {
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
        families: 0,
        requested_by: None,
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
                    state: Some(f.state),
                })
                .collect();
        }
        GrantKind::Connect => match sockets::parse(spec).transpose()? {
            Some(SocketGrant::Unix(name)) => rec.unix.push(name.to_string()),
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
