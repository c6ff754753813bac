"""The Helm chart: metadata, values schema, the same objects as deploy/kubernetes, and
every value reaching the objects it is for. Rendered with tests/deploy/helmlite.py
(`helm` is not installable here); see that file for the template subset."""

from __future__ import annotations

import copy
import json
import re
import tomllib

import deploylib as dl
import helmlite
import jsonschema
import pytest
import yaml

HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
HELM_ONLY_ANNOTATIONS = ("checksum/config",)


def workspace_version() -> str:
    cargo = tomllib.loads((dl.ROOT / "Cargo.toml").read_text())
    return cargo["workspace"]["package"]["version"]


def test_chart_metadata():
    chart = yaml.safe_load((dl.CHART_DIR / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "leash"
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", chart["version"])
    assert chart["appVersion"] == workspace_version()
    assert chart["kubeVersion"] == f">={dl.OLDEST_KUBERNETES_VERSION}-0"
    values = yaml.safe_load((dl.CHART_DIR / "values.yaml").read_text())
    assert values["image"]["tag"] == chart["appVersion"]
    ds = dl.one(dl.plain_objects(), "DaemonSet")
    assert (
        ds["spec"]["template"]["spec"]["containers"][0]["image"] == f"leash:{chart['appVersion']}"
    )


def test_values_schema_accepts_the_shipped_values_and_refuses_bad_ones():
    schema = json.loads((dl.CHART_DIR / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((dl.CHART_DIR / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    jsonschema.validate(
        helmlite.merge_values(values, yaml.safe_load(dl.CI_VALUES.read_text())), schema
    )
    bad = {
        "privileged": "yes",
        "capabilities": ["CAP_BPF"],
        "metrics": {"port": 0},
        "config": {"metrics": {"addr": "0.0.0.0:1"}},
        "imagee": {},
    }
    for key, value in bad.items():
        broken = helmlite.merge_values(copy.deepcopy(values), {key: value})
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
    broken = copy.deepcopy(values)
    broken["config"]["pin_dir"] = "/var/lib/leash/pins"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def normalized(obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    for meta in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata", {})):
        for key in HELM_ONLY_LABELS:
            meta.get("labels", {}).pop(key, None)
        for key in HELM_ONLY_ANNOTATIONS:
            meta.get("annotations", {}).pop(key, None)
    if obj["kind"] == "ConfigMap":
        obj["data"] = {k: yaml.safe_load(v) for k, v in obj["data"].items()}
    return obj


def key(obj: dict) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def test_default_values_render_the_same_objects_as_deploy_kubernetes(tmp_path):
    rendered = dl.objects(
        dl.render(
            extra={"namespace": {"create": True}, "exampleAgent": {"enabled": True}}, tmp=tmp_path
        )
    )
    chart = {key(o): normalized(o) for o in rendered}
    plain = {key(o): normalized(o) for o in dl.plain_objects()}
    assert sorted(chart) == sorted(plain)
    for k in plain:
        assert chart[k] == plain[k], f"{k} differs between the chart and deploy/kubernetes"


def test_default_values_render_no_namespace_and_no_example():
    kinds = sorted(o["kind"] for o in dl.objects(dl.render()))
    assert kinds == ["ConfigMap", "DaemonSet", "ServiceAccount"]


def test_non_default_values_reach_their_objects():
    values = yaml.safe_load(dl.CI_VALUES.read_text())
    objs = dl.objects(dl.render([dl.CI_VALUES]))
    d = dl.daemon(objs)
    image = f"{values['image']['repository']}:{values['image']['tag']}"
    assert d.container["image"] == image
    assert d.container["imagePullPolicy"] == "Always"
    assert d.pod["imagePullSecrets"] == values["imagePullSecrets"]
    assert d.pod["initContainers"][0]["image"] == image
    assert dl.one(objs, "Pod", "example-agent")["spec"]["initContainers"][0]["image"] == image
    port = values["metrics"]["port"]
    assert d.config["metrics"]["addr"] == f"0.0.0.0:{port}"
    assert d.container["ports"][0]["containerPort"] == port
    assert d.ds["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert d.pod["nodeSelector"] == values["nodeSelector"]
    assert d.pod["tolerations"] == values["tolerations"]
    # Maps merge deeply, as in Helm: the default cpu limit stays.
    assert d.container["resources"] == {
        "requests": values["resources"]["requests"],
        "limits": {"cpu": "1", "memory": values["resources"]["limits"]["memory"]},
    }
    assert "priorityClassName" not in d.pod
    assert d.ds["spec"]["template"]["metadata"]["annotations"]["example.com/team"] == "security"
    assert d.container["securityContext"]["capabilities"]["add"] == values["capabilities"]
    for field in ("state_dir", "audit_log", "socket", "log_level", "tasks"):
        assert d.config[field] == values["config"][field], field
    assert d.host_path_of("state") == values["config"]["state_dir"]
    assert d.host_path_of("log") == "/var/log/leash-audit"
    assert d.host_path_of("run") == "/run/leash-agents"
    assert dl.one(objs, "Namespace", "leash-system")
    agent = dl.one(objs, "Pod", "example-agent")
    assert agent["metadata"]["namespace"] == "agents"
    assert agent["spec"]["containers"][0]["image"] == values["exampleAgent"]["image"]


def test_a_config_change_changes_the_pod_template(tmp_path):
    """The daemon reads its config once: a new config must roll the pods."""
    a = dl.daemon(dl.objects(dl.render()))
    b = dl.daemon(dl.objects(dl.render(extra={"config": {"log_level": "debug"}}, tmp=tmp_path)))
    key = "checksum/config"
    assert (
        a.ds["spec"]["template"]["metadata"]["annotations"][key]
        != b.ds["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_socket_group_null_renders_no_supplemental_group(tmp_path):
    objs = dl.objects(
        dl.render(
            extra={"exampleAgent": {"enabled": True}, "config": {"socket": {"group": None}}},
            tmp=tmp_path,
        )
    )
    assert "group" not in dl.daemon(objs).config["socket"]
    assert (
        "supplementalGroups" not in dl.one(objs, "Pod", "example-agent")["spec"]["securityContext"]
    )
