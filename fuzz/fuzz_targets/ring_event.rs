//! Raw ring-buffer records, as a kernel object of any version could write them. A
//! record of the event's size decodes, field for field; a shorter one is refused; the
//! decision always serializes for the audit log.
#![no_main]

use leash::kernel::events::{Decoded, Target, decode};
use leash_common::{Action, Event, Reason, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(d) = decode(data) else {
        assert!(
            data.len() < size_of::<Event>(),
            "a full-size record was refused"
        );
        return;
    };
    assert!(data.len() >= size_of::<Event>());
    // SAFETY: the length is checked; Event is plain integers, read unaligned.
    let e: Event = unsafe { data.as_ptr().cast::<Event>().read_unaligned() };
    assert_eq!(
        (d.ts_ns, d.task, d.pid, d.tid),
        (e.ts_ns, e.task, e.pid, e.tid)
    );
    assert!(!d.comm.contains('\0'));
    check_byte::<Action>(d.kind, e.action);
    check_byte::<Verdict>(d.verdict, e.verdict);
    check_byte::<Reason>(d.reason, e.reason);
    match &d.target {
        Target::Exec { dev, ino, path } => {
            assert_eq!((*dev, *ino), (e.dev, e.ino));
            assert_eq!(e.action, Action::Exec as u8);
            assert!(!path.contains('\0'));
        }
        Target::Net { port, .. } => assert_eq!(*port, e.port),
        Target::Unix { path }
        | Target::Guard { call: path, .. }
        | Target::Compat { call: path, .. } => {
            assert!(!path.contains('\0'));
        }
        Target::Socket { family, .. } => assert_eq!(*family, e.family),
        Target::Escape {
            moved_pid,
            cgroup_id,
            killed_at_move,
        } => {
            assert_eq!(e.action, Action::Tamper as u8);
            assert_eq!((*moved_pid, *cgroup_id), (e.dev, e.ino));
            assert_eq!(*killed_at_move, e.proto != 0);
        }
        Target::Process {} => {}
    }
    let json = serde_json::to_value(&d).expect("a decision serializes");
    for field in ["kind", "verdict", "reason"] {
        assert!(json[field].is_string(), "{field} in {json}");
    }
});

fn check_byte<T>(decoded: Decoded<T>, byte: u8)
where
    T: TryFrom<u8, Error = u8> + Copy + PartialEq + std::fmt::Debug + Into<&'static str>,
{
    match (decoded, T::try_from(byte)) {
        (Decoded::Known(v), Ok(w)) => assert_eq!(v, w),
        (Decoded::Unknown(b), Err(_)) => {
            assert_eq!(b, byte);
            assert_eq!(decoded.as_str(), "unknown");
        }
        (d, r) => panic!("byte {byte} decoded as {d:?}, but try_from gives {r:?}"),
    }
}
