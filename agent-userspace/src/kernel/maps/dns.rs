//! `DNS_TARGETS`: where each task's DNS queries are redirected.

use leash_common::{DnsTarget, maps as names};

use super::{Maps, MapsError, op_err, removed};

impl Maps {
    /// Sends the DNS of task `id` to `target` from now on.
    pub fn set_dns_target(&mut self, id: u64, target: DnsTarget) -> Result<(), MapsError> {
        self.dns
            .insert(id, target, 0)
            .map_err(op_err("insert", names::DNS_TARGETS))
    }

    /// The task's DNS is denied from now on (no responder to send it to).
    pub fn remove_dns_target(&mut self, id: u64) -> Result<(), MapsError> {
        removed(self.dns.remove(&id), names::DNS_TARGETS)
    }

    #[must_use]
    pub fn dns_target(&self, id: u64) -> Option<DnsTarget> {
        self.dns.get(&id, 0).ok()
    }
}
