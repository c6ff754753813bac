//! Class 16, time: a task's TTL passes while its process waits; the kernel checks the
//! expiry at each decision, with no daemon involved.

use std::time::Duration;

use harness::TaskSpec;
use harness::{Action, Reason};
use harness::{EPERM, Harness, Listeners};

#[test]
fn expired_task_is_denied_by_the_kernel_clock() {
    let h = Harness::load();
    let l = Listeners::new();
    let task = h.task(TaskSpec {
        connect: vec![format!("127.0.0.1:{}", l.tcp4_port())],
        ttl: Some(Duration::from_millis(2500)),
        ..TaskSpec::default()
    });
    let mut s = task.session();
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port())),
        "ok"
    );
    // No daemon runs here: only the kernel's check of the expiry can deny.
    std::thread::sleep(Duration::from_millis(2700));
    task.assert_denied(Action::Connect, Reason::TaskExpired, EPERM, || {
        s.run(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port()))
    });
}
