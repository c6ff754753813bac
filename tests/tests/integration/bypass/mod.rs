//! The bypass suite: one module per numbered class of the threat model
//! (docs/security.md, "The classes"), named `cNN_...` after the class number. Every
//! class runs at least one concrete attempt inside a task and expects the denial, its
//! counter and its event; untagged processes must be unaffected by the same call.

mod c01_ipv6_forms;
mod c02_io_uring;
mod c03_tcp_fast_open;
mod c04_unconnected_datagrams;
mod c05_other_families;
mod c06_passed_fds;
mod c07_other_names;
mod c08_exec_without_a_path;
mod c09_scripts_and_loaders;
mod c10_races;
mod c11_escaping_the_tree;
mod c12_namespaces;
mod c13_pid_reuse;
mod c14_map_exhaustion;
mod c15_attacks_on_leash;
mod c16_time;
mod c17_daemon_restart;
mod c18_compat_syscalls;
mod c19_mounts_and_unix_names;
mod c20_host_state;
mod c21_io_uring_grant;
mod c22_kernel_doors;
mod c23_changed_files;
mod c24_who_calls_the_api;
mod c25_file_system_identity;

use harness::untagged;
