use std::time::Duration;

use super::*;
use crate::protocol::Mode;

const EXAMPLE: &str = include_str!("../../../examples/policy/policy.yaml");

fn policy() -> Policy {
    Policy::from_yaml(EXAMPLE, "example").unwrap()
}

fn grant(s: &str) -> GrantSpec {
    s.parse().unwrap()
}

fn denied(v: Verdict) -> String {
    match v {
        Verdict::Deny(m) => m,
        other @ (Verdict::Allow | Verdict::Pending) => {
            panic!("expected a refusal, got {other:?}")
        }
    }
}

#[test]
fn example_policy_loads_and_validates() {
    let p = policy();
    assert_eq!(p.rules.len(), 2);
    assert!(p.cedar_text().contains("ci:max_ttl"));
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
}

#[test]
fn rules_match_first_pattern() {
    let p = policy();
    assert_eq!(p.rule_for("ci-build").unwrap().file.name, "ci");
    assert_eq!(p.rule_for("dev-assistant").unwrap().file.name, "dev");
    assert!(p.rule_for("other").is_none());
    assert!(glob_match("a*b*c", "aXXbYc"));
    assert!(!glob_match("a*b", "ab-"));
    assert!(!glob_match("ab*ba", "aba"));
}

#[test]
fn grants_within_the_ceiling_are_allowed() {
    let p = policy();
    for g in [
        "exec:/usr/bin/git",
        "exec:/usr/libexec/git-core/git-remote-https",
        "exec:/usr/libexec/git-core/",
        "connect:10.1.2.3:443/tcp",
        "connect:10.20.0.0/16:443/tcp",
        "connect:api.github.com:443/tcp",
        "unix:/run/postgresql/.s.PGSQL.5432",
    ] {
        assert_eq!(p.check_grant("ci-x", &grant(g)), Verdict::Allow, "{g}");
    }
}

#[test]
fn each_kind_of_excess_is_refused_naming_grant_and_rule() {
    let p = policy();
    for (g, want) in [
        (
            "exec:/usr/bin/python3",
            "exec grant /usr/bin/python3 is outside the ceiling of rule \"ci\"",
        ),
        ("exec:/usr/libexec/git-core/sub/x", "outside the ceiling"),
        // A directory ceiling admits the files in it, not everything written below it.
        ("exec:/usr/libexec/git-core/**", "outside the ceiling"),
        ("exec:/usr/bin/../bin/sh", "not normalized"),
        (
            "connect:10.0.0.0/7:443/tcp",
            "connect grant 10.0.0.0/7:443/tcp is outside",
        ),
        ("connect:10.0.0.1:444/tcp", "outside"),
        ("connect:10.0.0.1:443", "outside"),
        ("connect:github.com:443/tcp", "outside"),
        (
            "connect:evil.com:443/tcp",
            "it allows connect 10.0.0.0/8:443/tcp",
        ),
        (
            "unix:/run/docker.sock",
            "unix grant /run/docker.sock is outside",
        ),
    ] {
        let v = p.check_grant("ci-x", &grant(g));
        assert!(matches!(v, Verdict::Deny(_)), "{g}: {v:?}");
        let m = denied(v);
        assert!(m.contains(want), "{g}: {m}");
    }
    let m = denied(p.check_grant("nobody", &grant("exec:/usr/bin/git")));
    assert!(m.contains("matches no rule"), "{m}");
    // The raw Cedar forbid wins over the dev rule's ceiling and is named.
    let p2 =
        Policy::from_yaml(&EXAMPLE.replace("127.0.0.0/8:*", "0.0.0.0/0:*"), "example").unwrap();
    assert_eq!(
        p2.check_grant("dev-x", &grant("connect:1.1.1.1:80")),
        Verdict::Allow
    );
    let m = denied(p2.check_grant("dev-x", &grant("connect:169.254.169.254:80")));
    assert!(m.contains("no-metadata-service"), "{m}");
}

#[test]
fn approval_entries_make_grants_pending() {
    let p = policy();
    assert_eq!(
        p.check_grant("ci-x", &grant("exec:/usr/bin/curl")),
        Verdict::Pending
    );
    assert_eq!(
        p.check_grant("ci-x", &grant("connect:1.2.3.4:80/tcp")),
        Verdict::Pending
    );
    // Approval takes precedence where both match.
    assert_eq!(
        p.check_grant("ci-x", &grant("connect:10.9.1.1:443/tcp")),
        Verdict::Pending
    );
}

#[test]
fn task_limits() {
    let p = policy();
    let hour = Duration::from_hours(1);
    assert_eq!(
        p.check_task("ci-x", hour, Mode::Enforce, true),
        Verdict::Allow
    );
    let m = denied(p.check_task("ci-x", hour * 2, Mode::Enforce, true));
    assert!(m.contains("max_ttl 1h of rule \"ci\""), "{m}");
    let m = denied(p.check_task("ci-x", hour, Mode::Audit, true));
    assert!(m.contains("modes [\"enforce\"] of rule \"ci\""), "{m}");
    let m = denied(p.check_task("ci-x", hour, Mode::Enforce, false));
    assert!(m.contains("require_intent of rule \"ci\""), "{m}");
    assert_eq!(
        p.check_task("dev-x", hour, Mode::Audit, false),
        Verdict::Allow
    );
    assert!(matches!(
        p.check_task("x", hour, Mode::Audit, true),
        Verdict::Deny(_)
    ));
}

#[test]
fn file_modes_bound_the_mode_a_task_may_ask_for() {
    use crate::protocol::FileMode;
    let p = policy();
    assert_eq!(
        p.check_file_mode("ci-x", FileMode::Restricted),
        Verdict::Allow
    );
    let m = denied(p.check_file_mode("ci-x", FileMode::Writes));
    assert!(
        m.contains("file mode writes is not among the file_modes [\"restricted\"] of rule \"ci\""),
        "{m}"
    );
    assert_eq!(p.check_file_mode("dev-x", FileMode::Open), Verdict::Allow);
    assert!(matches!(
        p.check_file_mode("nobody", FileMode::Open),
        Verdict::Deny(_)
    ));
}

#[test]
fn approvers() {
    let p = policy();
    let root = Approver {
        uid: 0,
        subject: None,
    };
    let user = Approver {
        uid: 1000,
        subject: None,
    };
    let oncall = Approver {
        uid: 1000,
        subject: Some("spiffe://example.org/human/oncall".into()),
    };
    assert!(p.may_approve(&root, "ci-x"));
    assert!(!p.may_approve(&user, "ci-x"));
    assert!(p.may_approve(&oncall, "ci-x"));
    assert!(!p.may_approve(&root, "unknown-agent"));
    // Only uids, or only subjects: each list alone is a valid Cedar condition.
    let uids_only = Policy::from_yaml(
        "approvers: {uids: [7]}\nrules: [{name: a, agents: [x]}]",
        "t",
    )
    .unwrap();
    assert!(uids_only.may_approve(
        &Approver {
            uid: 7,
            subject: None
        },
        "x"
    ));
    assert!(!uids_only.may_approve(&root, "x"));
}

#[test]
fn bad_files_are_rejected_with_the_rule() {
    for (text, want) in [
        (
            "rules: [{name: a, agents: [x], exec: [bin/git]}]",
            "rule \"a\": exec entry \"bin/git\"",
        ),
        (
            "rules: [{name: a, agents: [x], connect: [\"10.0.0.0/8\"]}]",
            "missing :PORTS",
        ),
        (
            "rules: [{name: a, agents: [x], max_ttl: forever}]",
            "max_ttl",
        ),
        (
            "rules: [{name: a, agents: [x], colour: red}]",
            "unknown field",
        ),
        ("rules: [{name: a, agents: []}]", "lists no agent"),
        (
            "rules: [{name: a, agents: [x]}, {name: a, agents: [y]}]",
            "two rules",
        ),
        (
            "cedar: 'permit(principal, action, resource) when { resource.nope };'",
            "Cedar",
        ),
        ("cedar: 'permit(principal'", "cedar"),
    ] {
        let e = Policy::from_yaml(text, "t")
            .err()
            .unwrap_or_else(|| panic!("{text} loaded"))
            .to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
}

/// The kernel matches IPv4 as `::ffff:a.b.c.d`: IPv6 grants reaching that block meet
/// the IPv4 `forbid`s and may use the IPv4 ceilings.
#[test]
fn ipv6_grants_reaching_ipv4_meet_the_ipv4_policies() {
    let wide = Policy::from_yaml(
        r#"
rules:
  - name: wide
    agents: [w]
    connect: ["[::]/0:*", "0.0.0.0/0:*"]
cedar: |
  @id("no-loopback")
  forbid(principal, action == Leash::Action::"connect", resource)
  when { resource has net && (resource.net.isInRange(ip("127.0.0.0/8")) || ip("127.0.0.0/8").isInRange(resource.net)) };
  @id("no-metadata-service")
  forbid(principal, action == Leash::Action::"connect", resource)
  when { resource has net && (resource.net.isInRange(ip("169.254.0.0/16")) || ip("169.254.0.0/16").isInRange(resource.net)) };
"#,
        "t",
    )
    .unwrap();
    for (g, rule) in [
        ("connect:[::]/0:*", "no-loopback"),
        ("connect:[::]/0:*", "no-metadata-service"),
        ("connect:[::ffff:0:0]/96:443/tcp", "no-loopback"),
        ("connect:[::ffff:127.0.0.1]:80", "no-loopback"),
        ("connect:127.0.0.1:80", "no-loopback"),
        ("connect:[::ffff:169.254.169.254]:80", "no-metadata-service"),
    ] {
        let m = denied(wide.check_grant("w", &grant(g)));
        assert!(m.contains(rule), "{g}: {m}");
    }
    let m = denied(wide.check_grant("w", &grant("connect:[::ffff:127.0.0.1]:80")));
    assert!(m.contains("it reaches IPv4 127.0.0.1/32:80"), "{m}");
    for g in [
        "connect:[::ffff:10.0.0.1]:443",
        "connect:[2001:db8::]/32:*",
        "connect:[::1]:80",
        "connect:10.0.0.0/8:*",
    ] {
        assert_eq!(wide.check_grant("w", &grant(g)), Verdict::Allow, "{g}");
    }

    // The example policy: a mapped address is the IPv4 grant it names.
    let p = policy();
    assert_eq!(
        p.check_grant("dev-x", &grant("connect:[::ffff:127.0.0.1]:80")),
        Verdict::Allow
    );
    assert_eq!(
        p.check_grant("ci-x", &grant("connect:[::ffff:10.1.2.3]:443/tcp")),
        Verdict::Allow
    );
    assert_eq!(
        p.check_grant("ci-x", &grant("connect:[::ffff:1.2.3.4]:80/tcp")),
        Verdict::Pending
    );
    // [::]/0 reaches 169.254.0.0/16; the example's forbid tests overlap.
    let m = denied(p.check_grant("dev-x", &grant("connect:[::]/0:*")));
    assert!(m.contains("no-metadata-service"), "{m}");
    // Only part of [::]/0 is IPv4: without a forbid, the IPv4 ceiling cannot cover the rest.
    let m = denied(policy_without_cedar().check_grant("dev-x", &grant("connect:[::]/0:*")));
    assert!(m.contains("outside the ceiling of rule \"dev\""), "{m}");
    let m = denied(p.check_grant("dev-x", &grant("connect:[::ffff:169.254.169.254]:80")));
    assert!(m.contains("no-metadata-service"), "{m}");
}

fn policy_without_cedar() -> Policy {
    let text = &EXAMPLE[..EXAMPLE.find("\n# A forbid").unwrap()];
    Policy::from_yaml(text, "example").unwrap()
}

#[test]
fn load_errors_keep_their_source() {
    let e = Policy::from_yaml("rules: [{name: a, agents: [x], pending_ttl: soon}]", "t")
        .err()
        .expect("a bad duration");
    assert!(
        matches!(&e, PolicyError::Duration { rule, field: "pending_ttl", .. } if rule == "a"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("policy t, rule \"a\": pending_ttl \"soon\": "),
        "{e}"
    );
    assert!(std::error::Error::source(&e).is_some());
    let e = Policy::from_yaml("rules: 3", "t").err().expect("bad yaml");
    assert!(matches!(e, PolicyError::Parse { .. }), "{e:?}");
}

#[test]
fn file_grants_have_path_ceilings() {
    use crate::protocol::FileMode;
    let p = policy();
    for g in [
        "read:/srv/datasets",
        "read:/srv/datasets/2024/",
        "read:/usr/share/doc/git",
        // A write entry covers reads under it.
        "read:/srv/ci-out/logs",
        "write:/srv/ci-out",
        "write:/srv/ci-out/job-7",
    ] {
        assert_eq!(p.check_grant("ci-x", &grant(g)), Verdict::Allow, "{g}");
    }
    for (g, names) in [
        ("write:/srv/datasets", "it allows write /srv/ci-out"),
        (
            "read:/srv/datasets-private",
            "it allows read /srv/datasets, /usr/share/doc, /srv/ci-out",
        ),
        ("read:/srv", "rule \"ci\""),
        ("write:/etc", "write grant /etc"),
    ] {
        let m = denied(p.check_grant("ci-x", &grant(g)));
        assert!(
            m.contains(names) && m.contains("outside the ceiling"),
            "{g}: {m}"
        );
    }
    // Not normalized: refused, so `..` cannot climb out of an allowed hierarchy.
    let m = denied(p.check_grant("ci-x", &grant("read:/srv/datasets/../../etc")));
    assert!(m.contains("not normalized"), "{m}");
    // A rule without file ceilings allows no file grant.
    let m = denied(p.check_grant("dev-x", &grant("read:/srv/datasets")));
    assert!(m.contains("it allows read nothing"), "{m}");
    // The mode and the grants together; the first refusal wins.
    let ok = ["read:/srv/datasets", "write:/srv/ci-out"];
    assert_eq!(
        p.check_files("ci-x", FileMode::Restricted, ok),
        Verdict::Allow
    );
    let m = denied(p.check_files("ci-x", FileMode::Writes, ok));
    assert!(m.contains("file_modes"), "{m}");
    let m = denied(p.check_files("ci-x", FileMode::Restricted, ["read:/home"]));
    assert!(m.contains("read grant /home"), "{m}");
    let m = denied(p.check_files("ci-x", FileMode::Restricted, ["exec:/bin/sh"]));
    assert!(m.contains("expected read:PATH or write:PATH"), "{m}");
}

#[test]
fn file_ceilings_cannot_wait_for_approval() {
    let text = "rules:\n  - name: r\n    agents: [a]\n    approval:\n      write: [/srv]\n";
    let Err(e) = Policy::from_yaml(text, "t") else {
        panic!("loaded")
    };
    let e = e.to_string();
    assert!(
        e.contains("rule \"r\"") && e.contains("cannot be widened"),
        "{e}"
    );
    // A glob entry.
    let text = "rules:\n  - name: r\n    agents: [a]\n    write: [\"/srv/*/src\"]\n";
    let p = Policy::from_yaml(text, "t").unwrap();
    assert_eq!(
        p.check_grant("a", &grant("write:/srv/ann/src")),
        Verdict::Allow
    );
    assert!(matches!(
        p.check_grant("a", &grant("write:/srv/ann")),
        Verdict::Deny(_)
    ));
}

#[test]
fn the_cedar_text_parses_when_an_annotation_id_has_a_line_break() {
    let yaml = "rules:\n  - name: r\n    agents: [a]\ncedar: |\n  @id(\"x\\ny: z\")\n  forbid(principal, action, resource);\n";
    let p = Policy::from_yaml(yaml, "t").unwrap();
    let text = p.cedar_text();
    assert!(
        <cedar_policy::PolicySet as std::str::FromStr>::from_str(&text).is_ok(),
        "{text}"
    );
}

#[test]
fn a_tree_grant_needs_a_glob_or_the_same_tree_above_it() {
    let p = Policy::from_yaml(
        "rules: [{name: a, agents: [x], exec: [/srv/*, /opt/venv/**, /usr/bin/]}]",
        "inline",
    )
    .unwrap();
    for g in [
        "exec:/srv/venv/**",
        "exec:/opt/venv/**",
        "exec:/usr/bin/git",
    ] {
        assert_eq!(p.check_grant("x", &grant(g)), Verdict::Allow, "{g}");
    }
    for g in ["exec:/usr/bin/**", "exec:/opt/**", "exec:/var/**"] {
        let m = denied(p.check_grant("x", &grant(g)));
        assert!(m.contains("outside the ceiling"), "{g}: {m}");
    }
}
