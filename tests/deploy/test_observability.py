"""The observability assets SREs deploy next to the daemon: the Grafana dashboard
(deploy/grafana/leash-dashboard.json) and the Prometheus rules
(deploy/prometheus/leash-rules.yaml, unit-tested by leash-rules.test.yaml).

promtool checks and unit-tests the rules and parses every dashboard query; every
metric any query names must be one the daemon exports (agent-userspace/src/metrics.rs),
so a renamed metric or a typo in a query fails here rather than as an empty panel or
an alert that can never fire."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "leash-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "leash-rules.yaml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "leash-rules.test.yaml"
METRICS_RS = ROOT / "agent-userspace" / "src" / "metrics.rs"

# Every series name the daemon exports (counters with their `_total`, the histogram's
# three series), plus Prometheus's own `up`.
EXPORTED = {
    "leash_decisions_total",
    "leash_tasks_ended_total",
    "leash_break_glass_total",
    "leash_denials_total",
    "leash_events_lost_total",
    "leash_tag_failures_total",
    "leash_processes_killed_total",
    "leash_cgroup_escapes_total",
    "leash_bpf_program_run_seconds_total",
    "leash_bpf_program_runs_total",
    "leash_tasks_active",
    "leash_grants_active",
    "leash_map_entries",
    "leash_map_capacity",
    "leash_bpf_stats_enabled",
    "leash_build_info",
    "leash_grant_apply_seconds_bucket",
    "leash_grant_apply_seconds_sum",
    "leash_grant_apply_seconds_count",
    "leash_dns_upstream_seconds_bucket",
    "leash_dns_upstream_seconds_sum",
    "leash_dns_upstream_seconds_count",
    "leash_dns_install_seconds_bucket",
    "leash_dns_install_seconds_sum",
    "leash_dns_install_seconds_count",
    "leash_dns_learned_addresses",
    "leash_dns_responders",
    "leash_http_connections",
    "leash_http_connections_refused_total",
    "leash_http_requests_timed_out_total",
}
PROMETHEUS_OWN = {"up"}

# Identifiers in PromQL that are not metric names when not followed by `(`.
PROMQL_KEYWORDS = {
    # aggregation operators (`sum by (x) (...)` puts `by` between them and the `(`)
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    # modifiers and binary operators
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "atan2",
    "start",
    "end",
    # number literals
    "inf",
    "nan",
}
# Modifiers followed by a list of label names, which are not metric names.
LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers followed by a
    selector (`{`, `[`), whitespace, an operator, `)` or the end, once strings, label
    matchers, range durations, label lists of modifiers and function calls are out."""
    s = STRING.sub('""', expr)
    s = re.sub(r"\{[^{}]*\}", "{}", s)
    s = re.sub(r"\[[^\[\]]*\]", "[]", s)
    s = LABEL_LIST.sub(r"\1", s)
    names = set()
    for m in IDENTIFIER.finditer(s):
        name = m.group(1)
        rest = s[m.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function or an aggregation: sum(...), rate(...)
        if name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def unknown_metrics(exprs: list[str], allowed: set[str]) -> dict[str, set[str]]:
    """Each expression that names a metric outside `allowed`, with those names."""
    out = {}
    for expr in exprs:
        bad = metric_names(expr) - allowed
        if bad:
            out[expr] = bad
    return out


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None and Path("/usr/bin/promtool").exists():
        path = "/usr/bin/promtool"
    if path is None:
        pytest.fail("promtool not found: run cargo xtask setup", pytrace=False)
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def load_rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def all_rules() -> list[dict]:
    return [r for g in load_rules()["groups"] for r in g["rules"]]


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    """Every panel, those nested in collapsed rows too (not the rows themselves, which
    only title a group and query nothing)."""
    out = []
    for p in load_dashboard()["panels"]:
        if p.get("type") != "row":
            out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_rows_title_the_panels_below_them():
    rows = [p for p in load_dashboard()["panels"] if p.get("type") == "row"]
    for r in rows:
        assert r.get("title") and "gridPos" in r, f"row {r.get('id')} has no title or position"
        assert not r.get("targets"), f"row {r.get('id')} has queries"
    assert "DNS" in {r["title"] for r in rows}


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels() for t in p.get("targets", []) if "expr" in t]
    for v in load_dashboard()["templating"]["list"]:
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and isinstance(q, str):
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q)
            exprs.append(m.group(1) if m else q)
    return exprs


def rule_exprs() -> list[str]:
    return [r["expr"] for r in all_rules()]


def recorded_names() -> set[str]:
    return {r["record"] for r in all_rules() if "record" in r}


def allowed_names() -> set[str]:
    return EXPORTED | PROMETHEUS_OWN | recorded_names()


# --- the metric-name check itself ---------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (agent, action) (rate(leash_decisions_total{verdict="denied"}[5m]))',
            {"leash_decisions_total"},
        ),
        (
            "leash_map_entries / leash_map_capacity > 0.8",
            {"leash_map_entries", "leash_map_capacity"},
        ),
        ("leash_map_entries/(leash_map_capacity>0)", {"leash_map_entries", "leash_map_capacity"}),
        (
            "histogram_quantile(0.99, sum by (le) (rate(leash_grant_apply_seconds_bucket[5m])))",
            {"leash_grant_apply_seconds_bucket"},
        ),
        ("absent(leash_build_info)", {"leash_build_info"}),
        ('up{job=~".*leash.*"} == 0', {"up"}),
        (
            "a and on (instance) group_left (version) b offset 5m or c unless bool d",
            {"a", "b", "c", "d"},
        ),
        ('sum without (instance) (x) * on (map) group_right y{map="sum(z)"}', {"x", "y"}),
        (
            "clamp_min(avg_over_time(leash:decisions:rate5m[1h:5m]), 1e-3) > Inf",
            {"leash:decisions:rate5m"},
        ),
        ("count(up == 0) or vector(0)", {"up"}),
        ('rate(foo{agent=~"$agent"}[$__rate_interval])', {"foo"}),
    ],
)
def test_metric_names_are_extracted(expr, names):
    assert metric_names(expr) == names


@pytest.mark.parametrize(
    "expr",
    [
        'sum by (agent) (rate(leash_decision_total{verdict="denied"}[5m]))',
        "leash_map_entries / leash_map_capacitys",
        "increase(leash_events_lost[5m]) > 0",
        "histogram_quantile(0.5, sum by (le) (rate(leash_grant_apply_seconds[5m])))",
        "leash:decision:rate5m",
        "sum(leash_tasks_active) by (agent) + leash_task_active",
    ],
)
def test_metric_check_rejects_typos(expr):
    """The check fails on a metric name the daemon does not export."""
    assert unknown_metrics([expr], allowed_names()), f"typo not caught in {expr!r}"


def test_exported_set_matches_the_daemon():
    """EXPORTED is what metrics.rs registers: every family registered there is covered
    and every name here comes from a registered family."""
    source = METRICS_RS.read_text()
    registered = set(re.findall(r'reg\.register\(\s*"([a-z_]+)"', source))
    assert registered, 'no reg.register("...") calls found in metrics.rs'

    def family(series: str) -> str:
        for suffix in ("_total", "_bucket", "_sum", "_count"):
            if series.endswith(suffix) and series[: -len(suffix)] in registered:
                return series[: -len(suffix)]
        return series

    assert {family(s) for s in EXPORTED} == registered


# --- the rules ----------------------------------------------------------------------


def test_promtool_check_rules():
    r = run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_rule_unit_tests():
    r = run_promtool("test", "rules", str(RULES_TEST.relative_to(ROOT)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_rule_unit_tests_fire_the_required_alerts():
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {
        t["alertname"]
        for group in tests
        for t in group.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert {"LeashEventsLost", "LeashMapNearCapacity"} <= fired


def test_rules_reference_only_exported_metrics():
    assert unknown_metrics(rule_exprs(), allowed_names()) == {}


EXPECTED_ALERTS = {
    # name: (`for`, severity)
    "LeashDown": ("2m", "critical"),
    "LeashNotReady": ("5m", "warning"),
    "LeashEventsLost": (None, "warning"),
    "LeashMapNearCapacity": ("10m", "warning"),
    "LeashDenialSpike": ("5m", "warning"),
    "LeashTagFailures": (None, "warning"),
    "LeashApiConnectionsRefused": (None, "warning"),
    "LeashBreakGlass": (None, "critical"),
}


def test_alerts_are_complete():
    alerts = {r["alert"]: r for r in all_rules() if "alert" in r}
    assert set(alerts) == set(EXPECTED_ALERTS)
    for name, (duration, severity) in EXPECTED_ALERTS.items():
        rule = alerts[name]
        assert rule.get("for") == duration, name
        assert rule["labels"]["severity"] == severity, name
        for key in ("summary", "description"):
            assert rule["annotations"].get(key, "").strip(), f"{name} has no {key}"


def test_alert_expressions():
    alerts = {r["alert"]: " ".join(r["expr"].split()) for r in all_rules() if "alert" in r}
    assert alerts["LeashDown"] == 'up{job=~".*leash.*"} == 0'
    assert alerts["LeashNotReady"] == "absent(leash_build_info)"
    assert alerts["LeashEventsLost"] == "increase(leash_events_lost_total[5m]) > 0"
    assert alerts["LeashTagFailures"] == "increase(leash_tag_failures_total[5m]) > 0"
    assert re.search(
        r"leash_map_entries / \(?leash_map_capacity.*\)? > 0\.8$", alerts["LeashMapNearCapacity"]
    )
    spike = alerts["LeashDenialSpike"]
    assert "> 5 *" in spike and "[1h]" in spike and "> 1" in spike and 'verdict="denied"' in spike


def test_recording_rules():
    records = {r["record"]: " ".join(r["expr"].split()) for r in all_rules() if "record" in r}
    assert "leash:decisions:rate5m" in records
    assert records["leash:decisions:rate5m"] == (
        "sum by (agent, action, verdict) (rate(leash_decisions_total[5m]))"
    )
    for name in records:
        assert re.fullmatch(
            r"leash:[a-z0-9_]+:[a-z0-9_]+", name
        ), f"{name}: not level:metric:operations"


# --- the dashboard ------------------------------------------------------------------


def test_dashboard_parses():
    d = load_dashboard()
    assert d["title"] and d["uid"]
    assert d["panels"]


def test_dashboard_panel_ids_are_unique():
    rows = [p for p in load_dashboard()["panels"] if p.get("type") == "row"]
    ids = [p.get("id") for p in dashboard_panels() + rows]
    assert None not in ids
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate panel ids: {duplicates}"


def test_every_panel_has_a_query():
    for p in dashboard_panels():
        exprs = [t.get("expr", "").strip() for t in p.get("targets", [])]
        assert any(exprs), f"panel {p.get('id')} {p.get('title')!r} has no target with an expr"
        assert all(exprs), f"panel {p.get('id')} {p.get('title')!r} has a target without an expr"


def test_dashboard_references_only_exported_metrics():
    assert unknown_metrics(dashboard_exprs(), allowed_names()) == {}


def test_dashboard_variables():
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"
    agent = variables["agent"]
    assert agent["type"] == "query"
    query = agent["query"]["query"] if isinstance(agent["query"], dict) else agent["query"]
    assert query == "label_values(leash_decisions_total, agent)"
    assert agent["datasource"]["uid"] == "${datasource}"


def test_panels_use_the_datasource_variable():
    for p in dashboard_panels():
        for owner in [p, *p.get("targets", [])]:
            ds = owner.get("datasource")
            assert ds == {
                "type": "prometheus",
                "uid": "${datasource}",
            }, f"panel {p['id']} {p['title']!r}: datasource {ds!r}, not $datasource"


@pytest.mark.parametrize(
    ("title_word", "needle"),
    [
        ("Blocked", 'sum by (agent, action) (rate(leash_decisions_total{verdict="denied"'),
        ("verdict", "sum by (verdict) (rate(leash_decisions_total"),
        ("Audited", 'verdict="audited"'),
        ("Tasks active", "sum by (agent) (leash_tasks_active"),
        ("Tasks ended", "sum by (reason) (rate(leash_tasks_ended_total"),
        ("Map use", "leash_map_entries / (leash_map_capacity"),
        ("Events lost rate", "rate(leash_events_lost_total[5m])"),
        (
            "Grant apply",
            "histogram_quantile(0.99, sum by (le) (rate(leash_grant_apply_seconds_bucket[5m])))",
        ),
        (
            "Grant apply",
            "histogram_quantile(0.5, sum by (le) (rate(leash_grant_apply_seconds_bucket[5m])))",
        ),
        (
            "BPF program run time",
            "sum by (program) (rate(leash_bpf_program_run_seconds_total[5m]))"
            " / sum by (program) (rate(leash_bpf_program_runs_total[5m])",
        ),
        ("DNS queries", 'sum by (verdict) (rate(leash_decisions_total{action="dns"'),
        (
            "DNS upstream",
            "histogram_quantile(0.99, sum by (le) (rate(leash_dns_upstream_seconds_bucket[5m])))",
        ),
        ("DNS learned", "sum by (agent) (leash_dns_learned_addresses"),
        ("DNS responders", "leash_dns_responders"),
    ],
)
def test_dashboard_has_the_panels_sres_need(title_word, needle):
    matches = [
        p
        for p in dashboard_panels()
        if title_word.lower() in p["title"].lower()
        and any(needle in t.get("expr", "") for t in p.get("targets", []))
    ]
    assert matches, f"no panel titled like {title_word!r} with a query containing {needle!r}"


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses every dashboard query (Grafana variables substituted) as the
    expression of a recording rule."""

    def substitute(expr: str) -> str:
        def value(m: re.Match) -> str:
            return "5m" if m.group(1).startswith("__") and "interval" in m.group(1) else ".*"

        return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", value, expr)

    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": substitute(e)}
        for i, e in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run_promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
