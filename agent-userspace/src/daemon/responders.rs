//! The daemon's side of the DNS responder (`crate::dns`): one responder per network
//! namespace of attached processes, each task's DNS slot written to the kernel, and
//! the responder's questions answered from the registry.

use std::{
    collections::HashMap,
    os::{fd::OwnedFd, unix::fs::MetadataExt as _},
    sync::{Arc, Mutex, Weak},
};

use leash_common::{Action, DnsTarget, dns::slot_addr};
use serde_json::json;

use super::{Daemon, Inner, RegistryError, registry};
use crate::{
    clock,
    dns::{self, Learned, Report, Responder, TaskDns, TaskLookup},
    protocol::{AuditEvent, TaskId},
};

/// Responders by network namespace (device and inode of its nsfs file).
pub(super) struct Responders {
    running: Mutex<HashMap<(u64, u64), Responder>>,
    limits: dns::Limits,
}

impl Responders {
    pub(super) fn new(config: &crate::config::DnsConfig) -> Self {
        Self {
            running: Mutex::default(),
            limits: dns::Limits {
                min_ttl: config.min_ttl,
                max_ttl: config.max_ttl,
                rate: config.rate,
                burst: config.burst,
                upstream_timeout: config.upstream_timeout,
            },
        }
    }
}

/// The registry as the responder sees it.
struct Lookup(Weak<Daemon>);

impl TaskLookup for Lookup {
    fn task(&self, slot: u32) -> Option<TaskDns> {
        let daemon = self.0.upgrade()?;
        let inner = daemon.lock();
        inner
            .tasks
            .by_dns_slot(slot)
            .and_then(|id| inner.tasks.dns_view(id))
    }

    fn learn(&self, slot: u32, learned: &[Learned]) -> Result<(), String> {
        let daemon = self.0.upgrade().ok_or("the daemon is stopping")?;
        let mut inner = daemon.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let id = tasks.by_dns_slot(slot).ok_or("the task has ended")?;
        tasks
            .learn(enforcer.maps_mut(), id, learned)
            .map_err(|e| e.to_string())?;
        daemon.save(&inner, id);
        Ok(())
    }

    fn report(&self, slot: u32, report: Report) {
        if let Some(daemon) = self.0.upgrade() {
            daemon.dns_event(slot, &report);
        }
    }
}

impl Daemon {
    /// Sends the DNS of task `id` to a responder in the network namespace of `pid`
    /// (started if it has none), asking the resolvers of `pid`'s own `resolv.conf`.
    /// Until this succeeds the task's DNS is denied (fail closed).
    pub(super) fn dns_attach(&self, id: u64, pid: u32) -> Result<(), RegistryError> {
        let ns_path = format!("/proc/{pid}/ns/net");
        let fail = |what: String| RegistryError::BadRequest(format!("DNS for pid {pid}: {what}"));
        let meta =
            std::fs::metadata(&ns_path).map_err(|e| fail(format!("cannot stat {ns_path}: {e}")))?;
        let key = (meta.dev(), meta.ino());
        let upstreams = dns::nameservers_in(std::path::Path::new(&format!("/proc/{pid}/root")));
        let ports = {
            let mut running = self
                .dns
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(r) = running.get(&key) {
                (r.udp_port, r.tcp_port)
            } else {
                let netns: OwnedFd = std::fs::File::open(&ns_path)
                    .map_err(|e| fail(format!("cannot open {ns_path}: {e}")))?
                    .into();
                let lookup: Arc<dyn TaskLookup> = Arc::new(Lookup(self.me.clone()));
                let r = Responder::start(netns, lookup, self.dns.limits.clone())
                    .map_err(|e| fail(e.to_string()))?;
                let ports = (r.udp_port, r.tcp_port);
                running.insert(key, r);
                ports
            }
        };
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let slot = tasks.dns_slot(id)?;
        if slot == 0 {
            return Err(fail("every DNS slot is in use".into()));
        }
        if let Some(t) = tasks.tasks.get_mut(&id) {
            t.dns_upstreams = upstreams;
        }
        enforcer.maps_mut().set_dns_target(
            id,
            DnsTarget {
                addr: slot_addr(slot).to_be(),
                udp_port: ports.0.to_be(),
                tcp_port: ports.1.to_be(),
            },
        )?;
        self.save(&inner, id);
        Ok(())
    }

    /// Learned addresses past their expiry leave the kernel's maps and the records.
    pub(super) fn sweep_learned(&self) {
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let changed = tasks.expire_learned(enforcer.maps_mut(), clock::boottime_ns());
        for id in changed {
            self.save(&inner, id);
        }
    }

    /// A `dns` event in the audit log and event stream, counted in the decision
    /// counters like the kernel's decisions.
    fn dns_event(&self, slot: u32, report: &Report) {
        let mut inner = self.lock();
        let Some(task) = inner
            .tasks
            .by_dns_slot(slot)
            .and_then(|id| inner.tasks.get(id))
            .cloned()
        else {
            return;
        };
        if let Err(e) = inner.enforcer.maps_mut().count_userspace(
            task.counter_slot,
            Action::Dns,
            report.verdict,
        ) {
            tracing::warn!(task = %TaskId(task.id), "cannot count a DNS decision: {e}");
        }
        drop(inner);
        let mut target = json!({ "name": report.name, "type": report.qtype, "tcp": report.tcp });
        if !report.addresses.is_empty() {
            target["addresses"] = report
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .into();
        }
        self.audit.emit(AuditEvent {
            ts: registry::wall_of_boot_ns(clock::boottime_ns()),
            task: task.id_string(),
            agent: task.agent.clone(),
            spiffe_id: task.spiffe_id(&self.limits.trust_domain),
            intent: task.intent.clone(),
            pid: 0,
            comm: String::new(),
            kind: Action::Dns.as_str().into(),
            verdict: report.verdict.as_str().into(),
            target,
            reason: report.reason.into(),
        });
    }
}
