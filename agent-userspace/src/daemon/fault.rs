//! Test-only fault injection:
//! - for the kill -9 soak (`cargo xtask soak`), an abort at one chosen point, so the soak
//!   can prove a crash there loses no acknowledged grant and enforces no unrecorded one;
//! - for the denial report's tests, a daemon slow to record the kernel's decisions.
//!
//! Off unless the daemon's environment sets [`ABORT_AFTER_GRANT_MAP_WRITE`] to exactly
//! [`CONFIRM`], or [`DELAY_EVENTS_MS`] to a number: no config field, flag or default
//! turns them on, and a daemon started with one says so in its log at start.

use std::{sync::OnceLock, time::Duration};

/// The variable that arms the abort right after a grant add's map write, before the
/// grant is journaled and answered.
pub const ABORT_AFTER_GRANT_MAP_WRITE: &str = "LEASH_TEST_FAULT_ABORT_AFTER_GRANT_MAP_WRITE";

/// The only value that arms it.
pub const CONFIRM: &str = "abort-the-daemon";

fn armed() -> bool {
    static ARMED: OnceLock<bool> = OnceLock::new();
    *ARMED.get_or_init(|| std::env::var(ABORT_AFTER_GRANT_MAP_WRITE).is_ok_and(|v| v == CONFIRM))
}

/// The variable that delays each batch of kernel decisions by this many milliseconds
/// (at most [`MAX_DELAY_MS`]) before it is recorded.
pub const DELAY_EVENTS_MS: &str = "LEASH_TEST_FAULT_DELAY_EVENTS_MS";

/// The longest delay [`DELAY_EVENTS_MS`] sets.
const MAX_DELAY_MS: u64 = 10_000;

fn events_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        let ms: u64 = std::env::var(DELAY_EVENTS_MS).ok()?.parse().ok()?;
        Some(Duration::from_millis(ms.min(MAX_DELAY_MS)))
    })
}

/// Logs, at start, that a fault is armed.
pub(super) fn announce() {
    if armed() {
        tracing::warn!(
            "{ABORT_AFTER_GRANT_MAP_WRITE} is set: this daemon aborts at its first grant add, a test fault"
        );
    }
    if let Some(delay) = events_delay() {
        tracing::warn!(
            "{DELAY_EVENTS_MS} is set: this daemon records each batch of kernel decisions {} ms late, a test fault",
            delay.as_millis()
        );
    }
}

/// Called before a batch of kernel decisions is recorded (on a thread that may block).
pub(super) fn before_events() {
    if let Some(delay) = events_delay() {
        std::thread::sleep(delay);
    }
}

/// Called once a grant is in the kernel's maps and before it is journaled or answered.
pub(super) fn after_grant_map_write(task: u64, grant: &str) {
    if armed() {
        eprintln!(
            "fault injection: aborting after the map write of grant {grant} of task {}",
            crate::protocol::TaskId(task)
        );
        std::process::abort();
    }
}
