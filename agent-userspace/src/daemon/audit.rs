//! The audit trail: every decision and lifecycle event as one JSON line, appended to
//! the audit log (mode 0640, rotated by size between whole lines, see `audit_file`) and
//! fanned out to `leash events` followers.

use std::{
    collections::{HashMap, VecDeque},
    path::Path,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;

use super::{
    audit_file::{AuditFile, Rotation},
    refusals::RefusalBook,
};
use crate::{audit_chain::HeadSigner, protocol::AuditEvent};

/// Events kept in memory for `GET /v1/events` without `follow`.
const RECENT: usize = 10_000;

pub struct AuditSink {
    file: Mutex<AuditFile>,
    recent: Mutex<VecDeque<Arc<AuditEvent>>>,
    tx: broadcast::Sender<Arc<AuditEvent>>,
    /// Each task's distinct refusals, whatever `recent` has let go.
    pub refusals: RefusalBook,
    /// The ancestors of each delegated task, put in each of its events.
    chains: Mutex<HashMap<String, Vec<String>>>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open the audit log {path}: {source}; fix audit_log in the config or the directory's permissions"
)]
pub struct AuditOpenError {
    path: String,
    #[source]
    source: std::io::Error,
}

impl AuditSink {
    /// Opens (creating) the log with the default rotation, no group and no signer.
    pub fn open(path: &Path) -> Result<Self, AuditOpenError> {
        Self::open_with(path, Rotation::default(), None)
    }

    /// Opens (creating) the log: mode 0640, group and rotation as configured, its
    /// chain's heads signed by `signer`.
    pub fn open_with(
        path: &Path,
        rotation: Rotation,
        signer: Option<HeadSigner>,
    ) -> Result<Self, AuditOpenError> {
        let err = |source| AuditOpenError {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = AuditFile::open(path, rotation, signer).map_err(err)?;
        let (tx, _) = broadcast::channel(4096);
        Ok(Self {
            file: Mutex::new(file),
            recent: Mutex::new(VecDeque::with_capacity(1024)),
            tx,
            refusals: RefusalBook::default(),
            chains: Mutex::default(),
        })
    }

    /// Puts `chain` (a delegated task's ancestors, root first) into each later event
    /// of `task`.
    pub fn set_chain(&self, task: &str, chain: Vec<String>) {
        if let Ok(mut c) = self.chains.lock() {
            c.insert(task.to_owned(), chain);
        }
    }

    /// Forgets the chain of a task that is gone for good.
    pub fn forget_chain(&self, task: &str) {
        if let Ok(mut c) = self.chains.lock() {
            c.remove(task);
        }
    }

    /// Appends one event.
    pub fn emit(&self, event: AuditEvent) {
        self.emit_all(vec![event]);
    }

    /// Appends a batch: whole lines, in as few `write`s as the batch's size allows
    /// (each a run of complete lines, so readers never see a partial line).
    pub fn emit_all(&self, events: Vec<AuditEvent>) {
        const CHUNK: usize = 64 * 1024;
        let mut buf = Vec::with_capacity(CHUNK);
        let mut shared = Vec::with_capacity(events.len());
        let chains = self.chains.lock().ok().filter(|c| !c.is_empty());
        for mut event in events {
            if let Some(chain) = chains.as_ref().and_then(|c| c.get(&event.task))
                && event.chain.is_empty()
            {
                event.chain.clone_from(chain);
            }
            match serde_json::to_writer(&mut buf, &event) {
                Ok(()) => buf.push(b'\n'),
                Err(e) => tracing::error!("cannot serialize an audit event: {e}"),
            }
            if buf.len() >= CHUNK {
                self.write(&buf);
                buf.clear();
            }
            self.refusals.record(&event);
            shared.push(Arc::new(event));
        }
        drop(chains);
        if !buf.is_empty() {
            self.write(&buf);
        }
        if let Ok(mut r) = self.recent.lock() {
            for e in &shared {
                if r.len() == RECENT {
                    r.pop_front();
                }
                r.push_back(Arc::clone(e));
            }
        }
        for e in shared {
            // Fails only when no one follows the events: nothing to deliver.
            let _ = self.tx.send(e);
        }
    }

    /// Writes whole lines; a rotation happens before a write, never inside one.
    fn write(&self, bytes: &[u8]) {
        if let Ok(mut f) = self.file.lock()
            && let Err(e) = f.append(bytes)
        {
            tracing::error!("audit log write failed: {e}");
        }
    }

    /// Signs the chain's head if records came since the last signature: the daemon
    /// calls this every few seconds and when it stops.
    pub fn sign_head(&self) {
        if let Ok(mut f) = self.file.lock()
            && let Err(e) = f.sign_head(now_rfc3339())
        {
            tracing::error!("cannot sign the audit log's head: {e}");
        }
    }

    /// Recent events, oldest first, optionally of one task.
    #[must_use]
    pub fn recent(&self, task: Option<&str>) -> Vec<Arc<AuditEvent>> {
        self.recent
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|e| task.is_none_or(|t| e.task == t))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AuditEvent>> {
        self.tx.subscribe()
    }
}

pub(super) fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}
