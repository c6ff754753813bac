//! The daemon's side of the DNS responder (`crate::dns`): one responder per network
//! namespace of attached processes, each task's DNS slot written to the kernel, and
//! the responder's questions answered from the registry.
//!
//! Every responder listens at the same ports in its own namespace, so a task's one DNS
//! target (slot address and ports) reaches a responder in each namespace its processes
//! are in; the ports of the previous daemon are taken again after a restart, so the
//! targets it left in the pinned map keep working while the new one adopts its tasks.

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

/// A network namespace: device and inode of its nsfs file.
type NetNs = (u64, u64);

/// The responders, by network namespace.
pub(super) struct Responders {
    running: Mutex<Running>,
    limits: dns::Limits,
}

#[derive(Default)]
struct Running {
    by_netns: HashMap<NetNs, Responder>,
    /// The ports (UDP, TCP) every new responder binds if it can.
    ports: Option<(u16, u16)>,
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

    /// Responders running now.
    pub(super) fn count(&self) -> i64 {
        let running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        i64::try_from(running.by_netns.len()).unwrap_or(i64::MAX)
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
        let new = tasks
            .learn(enforcer.maps_mut(), id, learned)
            .map_err(|e| e.to_string())?;
        // A refresh is not written to the state file (a write per query): after a
        // restart the address lasts until the expiry last saved, and the task's next
        // query for it learns it again.
        if new {
            daemon.save(&inner, id);
        }
        Ok(())
    }

    fn report(&self, slot: u32, report: Report) {
        if let Some(daemon) = self.0.upgrade() {
            daemon.dns_event(slot, &report);
        }
    }

    fn upstream_answered(&self, took: std::time::Duration) {
        if let Some(daemon) = self.0.upgrade() {
            daemon.recorded.dns_upstream.observe(took.as_secs_f64());
        }
    }

    fn relayed(&self, took: std::time::Duration) {
        if let Some(daemon) = self.0.upgrade() {
            daemon.recorded.dns_install.observe(took.as_secs_f64());
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
        let key = netns_of(pid).map_err(|e| fail(format!("cannot stat {ns_path}: {e}")))?;
        let upstreams = dns::nameservers_in(std::path::Path::new(&format!("/proc/{pid}/root")));
        let ports = {
            let mut running = self
                .dns
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let running = &mut *running;
            let r = match running.by_netns.entry(key) {
                std::collections::hash_map::Entry::Occupied(r) => r.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let netns: OwnedFd = std::fs::File::open(&ns_path)
                        .map_err(|e| fail(format!("cannot open {ns_path}: {e}")))?
                        .into();
                    let lookup: Arc<dyn TaskLookup> = Arc::new(Lookup(self.me.clone()));
                    let r = Responder::start(netns, lookup, self.dns.limits.clone(), running.ports)
                        .map_err(|e| fail(e.to_string()))?;
                    running.ports.get_or_insert((r.udp_port, r.tcp_port));
                    slot.insert(r)
                }
            };
            r.serve(id, upstreams.clone());
            (r.udp_port, r.tcp_port)
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

    /// Serves the DNS of adopted tasks (a restarted daemon): a responder in each
    /// network namespace their tagged processes are in, at the previous daemon's ports
    /// when they are free there. Without this their DNS would fail (closed) until a
    /// process attached again.
    pub(super) fn dns_adopt(&self) {
        let (by_task, ports) = {
            let inner = self.lock();
            let live = inner.tasks.live_ids();
            let maps = inner.enforcer.maps();
            let ports = live
                .iter()
                .find_map(|&id| maps.dns_target(id))
                .map(|t| (u16::from_be(t.udp_port), u16::from_be(t.tcp_port)));
            let mut by_task = maps.tagged_by_task();
            by_task.retain(|id, _| live.contains(id));
            (by_task, ports)
        };
        {
            let mut running = self
                .dns
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if running.ports.is_none() {
                running.ports = ports;
            }
        }
        let mut served = 0;
        for (id, tids) in by_task {
            let mut seen = std::collections::HashSet::new();
            for tid in tids {
                // A thread gone since the walk has nothing to serve.
                let Ok(ns) = netns_of(tid) else { continue };
                if !seen.insert(ns) {
                    continue;
                }
                match self.dns_attach(id, tid) {
                    Ok(()) => served += 1,
                    Err(e) => tracing::error!(
                        task = %TaskId(id),
                        "no DNS responder for an adopted task, its DNS is denied: {e}"
                    ),
                }
            }
        }
        if served > 0 {
            tracing::info!(served, "DNS served for adopted tasks");
        }
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

    /// The responders forget the resolvers of ended tasks, and one left serving no
    /// live task stops: its thread and sockets go, and with them its hold on the
    /// network namespace (a pod's, deleted since). Returns how many stopped.
    pub(super) fn sweep_responders(&self) -> usize {
        // The responders' lock, then the registry's (`dns_attach` never holds both),
        // so a task attached meanwhile is live here and keeps its responder.
        let mut running = self
            .dns
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let live = self.lock().tasks.live_ids();
        let before = running.by_netns.len();
        running
            .by_netns
            .retain(|_, r| r.retain(|id| live.contains(&id)));
        before - running.by_netns.len()
    }

    /// A `dns` event in the audit log and event stream, counted in the decision
    /// counters like the kernel's decisions.
    fn dns_event(&self, slot: u32, report: &Report) {
        let mut inner = self.lock();
        // Only what the event needs: a clone of the whole record (grants, learned
        // addresses) per query showed in the responder's profile.
        let Some((counter_slot, task, agent, spiffe_id, intent)) = inner
            .tasks
            .by_dns_slot(slot)
            .and_then(|id| inner.tasks.get(id))
            .map(|t| {
                (
                    t.counter_slot,
                    t.id_string(),
                    t.agent.clone(),
                    t.spiffe_id(&self.limits.trust_domain),
                    t.intent.clone(),
                )
            })
        else {
            return;
        };
        if let Err(e) =
            inner
                .enforcer
                .maps_mut()
                .count_userspace(counter_slot, Action::Dns, report.verdict)
        {
            tracing::warn!(task, "cannot count a DNS decision: {e}");
        }
        drop(inner);
        self.recorded
            .count_denial(Action::Dns.as_str(), report.verdict.as_str(), report.reason);
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
            task,
            agent,
            spiffe_id,
            intent,
            // The responder knows the query's task, not its process (docs/dns.md).
            pid: None,
            comm: String::new(),
            kind: Action::Dns.as_str().into(),
            verdict: report.verdict.as_str().into(),
            target,
            reason: report.reason.into(),
            chain: Vec::new(),
        });
    }
}

/// The network namespace of thread `tid`.
fn netns_of(tid: u32) -> std::io::Result<NetNs> {
    let meta = std::fs::metadata(format!("/proc/{tid}/ns/net"))?;
    Ok((meta.dev(), meta.ino()))
}
