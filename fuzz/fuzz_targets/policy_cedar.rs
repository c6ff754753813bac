//! The node policy file, compiled to Cedar. A policy that compiles gives Cedar text
//! that Cedar itself parses, and every question put to it gets an answer: an agent no
//! rule names is refused everything.
#![no_main]

use std::{str::FromStr as _, time::Duration};

use leash::{
    policy::{Approver, GrantSpec, Kind, Policy, Verdict},
    protocol::{FileMode, Mode},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::from_yaml(text, "fuzz.yaml") {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let cedar = policy.cedar_text();
    cedar_policy::PolicySet::from_str(&cedar)
        .unwrap_or_else(|e| panic!("{text:?} compiled to Cedar that does not parse: {e}\n{cedar}"));
    let _ = policy.warnings();
    // Ask about the agents the rules name and one no rule can name.
    let mut agents: Vec<String> = policy
        .rules
        .iter()
        .flat_map(|r| r.file.agents.iter().map(|a| a.replace('*', "x")))
        .take(4)
        .collect();
    let nobody = "\u{1}no-rule-names-this";
    agents.push(nobody.to_owned());
    let grants = [
        (Kind::Exec, "/usr/bin/git"),
        (Kind::Connect, "10.0.0.1:443/tcp"),
        (Kind::Connect, "api.example.com:443"),
        (Kind::Unix, "/run/x.sock"),
        (Kind::Read, "/srv/data"),
        (Kind::Write, "/srv/out"),
    ];
    for agent in &agents {
        let task = policy.check_task(agent, Duration::from_secs(60), Mode::Enforce, false);
        let mode = policy.check_file_mode(agent, FileMode::Writes);
        let _ = policy.may_approve(&Approver::default(), agent);
        let mut verdicts = vec![task, mode];
        for (kind, spec) in grants {
            let g = GrantSpec {
                kind,
                spec: spec.to_owned(),
            };
            verdicts.push(policy.check_grant(agent, &g));
        }
        if agent == nobody && policy.rule_for(agent).is_none() {
            assert!(
                verdicts.iter().all(|v| matches!(v, Verdict::Deny(_))),
                "an agent no rule names got {verdicts:?}"
            );
        }
    }
});
