//! The policy compiled to Cedar: one policy per limit and per ceiling entry, with ids
//! that name the rule, validated (strict mode) against [`SCHEMA`]. An agent is an
//! entity in the group of the rule governing it, so `principal in Leash::Rule::"ci"`
//! scopes each rule's policies.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    str::FromStr as _,
    time::Duration,
};

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use super::{
    Approver, PolicyFile, Rule, Verdict,
    ceiling::{self, Attr, GrantSpec, Kind},
    mapped::{self, Outcome},
};
use crate::protocol::Mode;

/// Leash's Cedar schema: what policies may refer to.
pub const SCHEMA: &str = r#"
namespace Leash {
  // A rule of the policy file; agents it governs are its members.
  entity Rule;
  entity Agent in [Rule] { name: String };
  // Whoever calls the API: socket peer uid, and the token subject ("" without a token).
  entity Caller { uid: Long, subject: String };
  entity Task;
  entity ExecGrant { path: String, dir: String };
  entity UnixGrant { path: String, dir: String };
  // A read: or write: file grant; `path` without a trailing slash.
  entity FileGrant { path: String };
  entity ConnectGrant {
    host: String, is_name: Bool, net?: ipaddr,
    port_lo: Long, port_hi: Long, tcp: Bool, udp: Bool,
  };
  action create_task appliesTo {
    principal: Agent, resource: Task,
    context: { ttl_seconds: Long, mode: String, has_intent: Bool },
  };
  action exec appliesTo { principal: Agent, resource: ExecGrant };
  action connect appliesTo { principal: Agent, resource: ConnectGrant };
  action unix appliesTo { principal: Agent, resource: UnixGrant };
  action read appliesTo { principal: Agent, resource: FileGrant };
  action write appliesTo { principal: Agent, resource: FileGrant };
  action approve appliesTo { principal: Caller, resource: Agent };
}
"#;

/// Annotation marking a permit whose grants wait for approval.
const APPROVAL: &str = "approval";

pub(crate) enum CompileError {
    Rule { rule: String, message: String },
    Cedar(String),
}

pub(crate) struct Engine {
    schema: Schema,
    policies: PolicySet,
    /// Policy id → what it says, for refusal messages.
    about: HashMap<String, String>,
    text: String,
}

fn uid(ty: &str, id: &str) -> EntityUid {
    // The type names are this module's constants, all valid.
    let ty = EntityTypeName::from_str(ty).expect("a valid Cedar type name");
    EntityUid::from_type_name_and_id(ty, EntityId::new(id))
}

fn action(name: &str) -> EntityUid {
    uid("Leash::Action", name)
}

fn rule_scope(rule: &str) -> String {
    format!("principal in Leash::Rule::\"{rule}\"")
}

fn cedar_err(e: impl std::fmt::Display) -> CompileError {
    CompileError::Cedar(e.to_string())
}

impl Engine {
    pub(crate) fn compile(file: &PolicyFile, rules: &[Rule]) -> Result<Self, CompileError> {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA).map_err(cedar_err)?;
        let mut out = Self {
            schema,
            policies: PolicySet::new(),
            about: HashMap::new(),
            text: String::new(),
        };
        for rule in rules {
            out.compile_rule(file, rule)?;
        }
        if let Some(extra) = &file.cedar {
            let set = PolicySet::from_str(extra)
                .map_err(|e| CompileError::Cedar(format!("in `cedar`: {e:?}")))?;
            for (n, p) in set.policies().enumerate() {
                let name = p
                    .annotation("id")
                    .map_or_else(|| format!("cedar{n}"), str::to_owned);
                let id = format!("cedar:{name}");
                out.about.insert(
                    id.clone(),
                    format!("Cedar policy {name:?} of the policy file"),
                );
                // The id is the policy's own annotation: escaped, so a line break in it
                // cannot end the comment and leave the rest as Cedar (found by the
                // `policy_cedar` fuzz target).
                let _ = writeln!(out.text, "// {}\n{p}\n", id.escape_debug());
                out.policies
                    .add(p.new_id(PolicyId::new(&id)))
                    .map_err(cedar_err)?;
            }
        }
        let result =
            Validator::new(out.schema.clone()).validate(&out.policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let msgs: Vec<String> = result.validation_errors().map(|e| format!("{e}")).collect();
            return Err(CompileError::Cedar(msgs.join("; ")));
        }
        Ok(out)
    }

    fn add(&mut self, id: String, src: &str, about: String) -> Result<(), CompileError> {
        let p = Policy::parse(Some(PolicyId::new(&id)), src)
            .map_err(|e| CompileError::Cedar(format!("{id}: {e}")))?;
        let _ = writeln!(self.text, "// {id}\n{src}\n");
        self.policies.add(p).map_err(cedar_err)?;
        self.about.insert(id, about);
        Ok(())
    }

    fn compile_rule(&mut self, file: &PolicyFile, rule: &Rule) -> Result<(), CompileError> {
        let r = &rule.file;
        let name = &r.name;
        let scope = rule_scope(name);
        let task = "action == Leash::Action::\"create_task\", resource";
        self.add(
            format!("{name}:agents"),
            &format!("permit({scope}, {task});"),
            format!("rule {name:?} lets its agents start tasks"),
        )?;
        if let Some(max) = rule.max_ttl {
            let secs = max.as_secs();
            self.add(
                format!("{name}:max_ttl"),
                &format!("forbid({scope}, {task}) when {{ context.ttl_seconds > {secs} }};"),
                format!(
                    "max_ttl {} of rule {name:?}",
                    humantime::format_duration(max)
                ),
            )?;
        }
        if let Some(modes) = &r.modes {
            let list: Vec<String> = modes
                .iter()
                .map(|m| format!("\"{}\"", mode_str(*m)))
                .collect();
            self.add(
                format!("{name}:modes"),
                &format!(
                    "forbid({scope}, {task}) unless {{ [{}].contains(context.mode) }};",
                    list.join(", ")
                ),
                format!("modes [{}] of rule {name:?}", list.join(", ")),
            )?;
        }
        if r.require_intent {
            self.add(
                format!("{name}:require_intent"),
                &format!("forbid({scope}, {task}) unless {{ context.has_intent }};"),
                format!("require_intent of rule {name:?}"),
            )?;
        }
        for kind in Kind::ALL {
            for (approval, list) in [
                (false, allowed(r, kind)),
                (true, r.approval.of(kind).to_vec()),
            ] {
                for (j, entry) in list.iter().enumerate() {
                    let cond =
                        ceiling::condition(kind, entry).map_err(|message| CompileError::Rule {
                            rule: name.clone(),
                            message: format!("{kind} entry {entry:?}: {message}"),
                        })?;
                    let (tag, annotation) = if approval {
                        ("approval", format!("@{APPROVAL}(\"required\") "))
                    } else {
                        ("allow", String::new())
                    };
                    self.add(
                        format!("{name}:{tag}:{kind}:{j}"),
                        &format!(
                            "{annotation}permit({scope}, action == Leash::Action::\"{kind}\", resource) when {{ {cond} }};"
                        ),
                        format!("{kind} {entry:?} of rule {name:?}"),
                    )?;
                }
            }
        }
        let uids: Vec<String> = file
            .approvers
            .uids
            .iter()
            .chain(&r.approvers.uids)
            .map(u32::to_string)
            .collect();
        let subjects: Vec<String> = file
            .approvers
            .subjects
            .iter()
            .chain(&r.approvers.subjects)
            .map(|s| format!("{s:?}"))
            .collect();
        // Cedar forbids empty set literals: only the non-empty lists become conditions.
        let conds: Vec<String> = [(uids, "uid"), (subjects, "subject")]
            .into_iter()
            .filter(|(list, _)| !list.is_empty())
            .map(|(list, attr)| format!("[{}].contains(principal.{attr})", list.join(", ")))
            .collect();
        if !conds.is_empty() {
            self.add(
                format!("{name}:approvers"),
                &format!(
                    "permit(principal, action == Leash::Action::\"approve\", resource in Leash::Rule::\"{name}\") when {{ {} }};",
                    conds.join(" || ")
                ),
                format!("approvers of rule {name:?}"),
            )?;
        }
        Ok(())
    }

    pub(crate) fn text(&self) -> String {
        self.text.clone()
    }

    fn agent_entities(rule: &Rule, agent: &str) -> Result<Vec<Entity>, String> {
        let rule_uid = uid("Leash::Rule", &rule.file.name);
        let attrs = HashMap::from([(
            "name".to_owned(),
            RestrictedExpression::new_string(agent.to_owned()),
        )]);
        Ok(vec![
            Entity::new(
                uid("Leash::Agent", agent),
                attrs,
                HashSet::from([rule_uid.clone()]),
            )
            .map_err(|e| e.to_string())?,
            Entity::new_no_attrs(rule_uid, HashSet::new()),
        ])
    }

    /// Runs one request; `Err` is an evaluation problem (a bad request).
    fn decide(
        &self,
        principal: EntityUid,
        act: &str,
        resource: EntityUid,
        context: Context,
        entities: Vec<Entity>,
    ) -> Result<(Decision, Vec<String>), String> {
        let request = Request::new(
            principal,
            action(act),
            resource,
            context,
            Some(&self.schema),
        )
        .map_err(|e| e.to_string())?;
        let entities =
            Entities::from_entities(entities, Some(&self.schema)).map_err(|e| e.to_string())?;
        let response = Authorizer::new().is_authorized(&request, &self.policies, &entities);
        if let Some(e) = response.diagnostics().errors().next() {
            return Err(e.to_string());
        }
        let mut reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        // Cedar reports a set; sorted, refusals read the same every time.
        reasons.sort();
        Ok((response.decision(), reasons))
    }

    fn describe(&self, ids: &[String]) -> String {
        ids.iter()
            .map(|id| self.about.get(id).cloned().unwrap_or_else(|| id.clone()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn check_task(
        &self,
        rule: &Rule,
        agent: &str,
        ttl: Duration,
        mode: Mode,
        has_intent: bool,
    ) -> Verdict {
        let run = || -> Result<Verdict, String> {
            let context = Context::from_pairs([
                (
                    "ttl_seconds".to_owned(),
                    RestrictedExpression::new_long(
                        i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
                    ),
                ),
                (
                    "mode".to_owned(),
                    RestrictedExpression::new_string(mode_str(mode).into()),
                ),
                (
                    "has_intent".to_owned(),
                    RestrictedExpression::new_bool(has_intent),
                ),
            ])
            .map_err(|e| e.to_string())?;
            let (decision, reasons) = self.decide(
                uid("Leash::Agent", agent),
                "create_task",
                uid("Leash::Task", "new"),
                context,
                Self::agent_entities(rule, agent)?,
            )?;
            Ok(match decision {
                Decision::Allow => Verdict::Allow,
                Decision::Deny => Verdict::Deny(format!(
                    "a task of agent {agent:?} (ttl {}s, mode {}, {}) is refused by {}",
                    ttl.as_secs(),
                    mode_str(mode),
                    if has_intent {
                        "with an intent"
                    } else {
                        "no intent"
                    },
                    if reasons.is_empty() {
                        format!("rule {:?} (no policy permits it)", rule.file.name)
                    } else {
                        self.describe(&reasons)
                    }
                )),
            })
        };
        run().unwrap_or_else(|e| Verdict::Deny(format!("cannot evaluate the task request: {e}")))
    }

    /// Cedar's answer on one grant, without its message.
    fn evaluate(&self, rule: &Rule, agent: &str, grant: &GrantSpec) -> Result<Outcome, String> {
        let attrs = ceiling::attributes(grant)?
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Attr::Str(s) => RestrictedExpression::new_string(s),
                    Attr::Long(n) => RestrictedExpression::new_long(n),
                    Attr::Bool(b) => RestrictedExpression::new_bool(b),
                    Attr::Ip(s) => RestrictedExpression::new_ip(s),
                };
                (k.to_owned(), v)
            })
            .collect();
        let resource = uid(grant.kind.entity_type(), &grant.spec);
        let mut entities = Self::agent_entities(rule, agent)?;
        entities
            .push(Entity::new(resource.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())?);
        let (decision, reasons) = self.decide(
            uid("Leash::Agent", agent),
            grant.kind.as_str(),
            resource,
            Context::empty(),
            entities,
        )?;
        Ok(match decision {
            Decision::Allow
                if reasons.iter().any(|id| {
                    self.policies
                        .annotation(&PolicyId::new(id), APPROVAL)
                        .is_some()
                }) =>
            {
                Outcome::Pending
            }
            Decision::Allow => Outcome::Allow,
            Decision::Deny if !reasons.is_empty() => Outcome::Forbidden(reasons),
            Decision::Deny => Outcome::Outside,
        })
    }

    pub(crate) fn check_grant(&self, rule: &Rule, agent: &str, grant: &GrantSpec) -> Verdict {
        let run = || -> Result<Verdict, String> {
            let mut outcome = self.evaluate(rule, agent, grant)?;
            let mut as_ipv4 = None;
            if let Some(part) = mapped::ipv4_part(grant) {
                let v4 = self.evaluate(rule, agent, &part.grant)?;
                let (joined, from_v4) = mapped::combine(outcome, v4, part.whole);
                outcome = joined;
                as_ipv4 = from_v4.then_some(part.grant.spec);
            }
            Ok(match outcome {
                Outcome::Pending => Verdict::Pending,
                Outcome::Allow => Verdict::Allow,
                Outcome::Forbidden(reasons) => Verdict::Deny(format!(
                    "{grant} for agent {agent:?} is forbidden by {}{}",
                    self.describe(&reasons),
                    as_ipv4.map_or_else(String::new, |v4| format!(
                        " (it reaches IPv4 {v4}: the kernel matches IPv4 as ::ffff:a.b.c.d)"
                    ))
                )),
                Outcome::Outside => {
                    let r = &rule.file;
                    let list = |c: &[String]| {
                        if c.is_empty() {
                            "nothing".to_owned()
                        } else {
                            c.join(", ")
                        }
                    };
                    Verdict::Deny(format!(
                        "{grant} is outside the ceiling of rule {:?} for agent {agent:?}: it allows {} {}{}",
                        r.name,
                        grant.kind,
                        list(&allowed(r, grant.kind)),
                        if r.approval.of(grant.kind).is_empty() {
                            String::new()
                        } else {
                            format!(" (with approval: {})", r.approval.of(grant.kind).join(", "))
                        }
                    ))
                }
            })
        };
        run().unwrap_or_else(|e| {
            Verdict::Deny(format!(
                "{grant} cannot be evaluated against rule {:?}: {e}",
                rule.file.name
            ))
        })
    }

    pub(crate) fn may_approve(&self, rule: &Rule, agent: &str, who: &Approver) -> bool {
        let run = || -> Result<bool, String> {
            let caller = uid("Leash::Caller", "caller");
            let attrs = HashMap::from([
                (
                    "uid".to_owned(),
                    RestrictedExpression::new_long(i64::from(who.uid)),
                ),
                (
                    "subject".to_owned(),
                    RestrictedExpression::new_string(who.subject.clone().unwrap_or_default()),
                ),
            ]);
            let mut entities = Self::agent_entities(rule, agent)?;
            entities.push(
                Entity::new(caller.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())?,
            );
            let (decision, _) = self.decide(
                caller,
                "approve",
                uid("Leash::Agent", agent),
                Context::empty(),
                entities,
            )?;
            Ok(decision == Decision::Allow)
        };
        run().unwrap_or(false)
    }
}

/// The plain ceiling entries of `kind`: a `write` entry covers `read` grants too
/// (write implies read).
fn allowed(r: &super::RuleFile, kind: Kind) -> Vec<String> {
    let mut list = r.allow.of(kind).to_vec();
    if kind == Kind::Read {
        list.extend(r.allow.write.iter().cloned());
    }
    list
}

fn mode_str(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit",
    }
}
