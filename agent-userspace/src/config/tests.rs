//! Tests of the configuration as a whole; each section's own are beside it.

use std::{path::Path, time::Duration};

use super::*;

/// The message of the parse error `yaml` gives.
pub(super) fn parse_err(yaml: &str) -> String {
    match Config::from_yaml(yaml) {
        Err(e @ ConfigError::Parse { .. }) => e.to_string(),
        other => panic!("expected a parse error for {yaml:?}, got {other:?}"),
    }
}

/// The field and message of the validation error `yaml` gives.
pub(super) fn invalid_field(yaml: &str) -> (&'static str, String) {
    match Config::from_yaml(yaml) {
        Err(ConfigError::Invalid { field, message }) => (field, message),
        other => panic!("expected a validation error for {yaml:?}, got {other:?}"),
    }
}

#[test]
fn embedded_default_is_the_default() {
    let parsed: Config = serde_yaml_ng::from_str(Config::default_yaml()).unwrap();
    assert_eq!(parsed, Config::default());
    assert_eq!(
        Config::from_yaml(Config::default_yaml()).unwrap(),
        Config::default()
    );
    assert_eq!(Config::load(None).unwrap(), Config::default());
}

#[test]
fn default_yaml_comments_every_field() {
    let mut previous = "";
    for line in Config::default_yaml().lines() {
        let trimmed = line.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            assert!(
                previous.trim_start().starts_with('#'),
                "no comment line above {line:?}"
            );
        }
        previous = line;
    }
}

#[test]
fn default_values() {
    let c = Config::default();
    assert_eq!(c.socket.path, Path::new("/run/leash/leash.sock"));
    assert_eq!(c.socket.group, None);
    assert_eq!(c.metrics.addr.to_string(), "127.0.0.1:9469");
    assert_eq!(c.state_dir, Path::new("/var/lib/leash"));
    assert_eq!(c.pin_dir, Path::new("/sys/fs/bpf/leash"));
    assert_eq!(c.audit_log, Path::new("/var/log/leash/audit.jsonl"));
    assert_eq!(c.trust_domain, "leash.local");
    assert_eq!(c.backend, BackendChoice::Auto);
    assert_eq!(c.maps.procs, 65_536);
    assert_eq!(c.maps.tasks, 16_384);
    assert_eq!(c.maps.exec_grants, 65_536);
    assert_eq!(c.maps.script_grants, 4096);
    assert_eq!(c.maps.net_grants, 65_536);
    assert_eq!(c.maps.events_bytes, 4_194_304);
    assert_eq!(c.tasks.default_ttl, Duration::from_hours(1));
    assert_eq!(c.tasks.max_ttl, Duration::from_hours(24));
    assert!(!c.tasks.kill_on_end);
    assert!(c.log_allowed.exec);
    assert!(!c.log_allowed.network);
    assert_eq!(c.log_level, "info");
    c.validate().unwrap();
}

#[test]
fn empty_and_comment_only_files_give_defaults() {
    assert_eq!(Config::from_yaml("").unwrap(), Config::default());
    assert_eq!(Config::from_yaml("# nothing\n").unwrap(), Config::default());
    assert_eq!(Config::from_yaml("{}").unwrap(), Config::default());
}

#[test]
fn serialization_round_trips_with_humantime_durations() {
    let mut c = Config::default();
    c.tasks.default_ttl = Duration::from_secs(90);
    c.tasks.max_ttl = Duration::from_millis(36_000_500);
    c.socket.group = Some(SocketGroup::Gid(1000));
    let text = serde_yaml_ng::to_string(&c).unwrap();
    assert!(text.contains("default_ttl: 90s"), "{text}");
    assert!(text.contains("backend: auto"), "{text}");
    assert!(text.contains("addr: 127.0.0.1:9469"), "{text}");
    assert_eq!(Config::from_yaml(&text).unwrap(), c);

    let text = serde_yaml_ng::to_string(&Config::default()).unwrap();
    assert!(text.contains("default_ttl: 1h"), "{text}");
    assert!(text.contains("max_ttl: 24h"), "{text}");
    assert!(text.contains("group: null"), "{text}");
    assert_eq!(Config::from_yaml(&text).unwrap(), Config::default());
}

#[test]
fn partial_override_keeps_other_defaults() {
    let c = Config::from_yaml(
        "socket:\n  group: leash\n\
         tasks:\n  default_ttl: 10m\n\
         maps:\n  procs: 1024\n\
         backend: portable\n\
         log_allowed:\n  network: true\n",
    )
    .unwrap();
    let mut want = Config::default();
    want.socket.group = Some(SocketGroup::Name("leash".into()));
    want.tasks.default_ttl = Duration::from_mins(10);
    want.maps.procs = 1024;
    want.backend = BackendChoice::Portable;
    want.log_allowed.network = true;
    assert_eq!(c, want);
}

#[test]
fn unknown_top_level_field_is_named() {
    let msg = parse_err("# leash\nsockt:\n  path: /run/x.sock\n");
    assert!(msg.contains("unknown field `sockt`"), "{msg}");
    assert!(msg.contains("expected one of `socket`"), "{msg}");
    assert!(msg.ends_with("at line 2 column 1"), "{msg}");
    let msg = parse_err("{log_level: info, sockt: 1}");
    assert!(msg.contains("unknown field `sockt`"), "{msg}");
}

#[test]
fn unknown_nested_field_is_named() {
    let msg = parse_err("tasks:\n  default_ttl: 1h\n  defualt_ttl: 2h\n");
    assert!(msg.contains("unknown field `defualt_ttl`"), "{msg}");
    assert!(msg.contains("tasks"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
    let msg = parse_err("maps: {procs: 1, prcos: 2}");
    assert!(msg.contains("unknown field `prcos`"), "{msg}");
    let msg = parse_err("log_allowed: {connect: true}");
    assert!(msg.contains("unknown field `connect`"), "{msg}");
}

#[test]
fn load_reads_files_and_reports_them() {
    let dir = std::env::temp_dir().join(format!("leash-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("leash.yaml");
    std::fs::write(&file, "log_level: debug\n").unwrap();
    assert_eq!(Config::load(Some(&file)).unwrap().log_level, "debug");

    std::fs::write(&file, "bogus: 1\n").unwrap();
    let err = Config::load(Some(&file)).unwrap_err().to_string();
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("unknown field `bogus`"), "{err}");

    let missing = dir.join("missing.yaml");
    let err = Config::load(Some(&missing)).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing.yaml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
