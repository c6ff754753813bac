//! The kernel's clock for expiries: `CLOCK_BOOTTIME`, as `bpf_ktime_get_boot_ns`.

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// Now, in `CLOCK_BOOTTIME` nanoseconds.
#[must_use]
pub fn boottime_ns() -> u64 {
    // CLOCK_BOOTTIME exists on every kernel leash supports; failure is impossible there.
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// The `CLOCK_BOOTTIME` instant `ttl` from now; a zero TTL means no expiry (0).
#[must_use]
pub fn expiry_after(ttl: Option<Duration>) -> u64 {
    match ttl {
        None => 0,
        Some(ttl) => {
            boottime_ns().saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
        }
    }
}
