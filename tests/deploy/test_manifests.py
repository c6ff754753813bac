"""The Kubernetes objects, as shipped in deploy/kubernetes and as the chart renders them
(default values and the non-default tests values): schema-valid at the pinned Kubernetes
version, yamllint-clean, and with the security-relevant fields a careless edit could
break pinned down."""

from __future__ import annotations

import posixpath
import subprocess
import sys

import deploylib as dl
import kubernetes_validate
import pytest
import yaml

VARIANTS = {
    # name: (objects, privileged?)
    "kubernetes": lambda: dl.plain_objects(),
    "chart-default": lambda: dl.objects(dl.render()),
    "chart-default-unprivileged": lambda: dl.objects(
        dl.render([dl.ROOT / "tests/deploy/unprivileged-values.yaml"])
    ),
    "chart-capabilities": lambda: dl.objects(dl.render([dl.CI_VALUES])),
}
PRIVILEGED = {
    "kubernetes": True,
    "chart-default": True,
    "chart-default-unprivileged": False,
    "chart-capabilities": False,
}


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def variant(request):
    return request.param, VARIANTS[request.param]()


# --- schemas and lint -----------------------------------------------------------------------


@pytest.mark.parametrize("version", [dl.KUBERNETES_VERSION, dl.OLDEST_KUBERNETES_VERSION])
def test_every_object_validates_against_the_kubernetes_schema(variant, version):
    name, objs = variant
    assert objs, name
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} at {version}: {e}")


def test_the_schema_check_catches_a_bad_field():
    ds = dl.one(dl.plain_objects(), "DaemonSet")
    ds["spec"]["template"]["spec"]["hostPid"] = True  # misspelled hostPID
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, dl.KUBERNETES_VERSION, strict=True)


def yamllint(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "-f",
            "parsable",
            "-c",
            "tests/deploy/yamllint.yaml",
            *args,
        ],
        cwd=dl.ROOT,
        input=stdin,
        capture_output=True,
        text=True,
    )


def test_yaml_files_are_yamllint_clean():
    r = yamllint("deploy/kubernetes", "deploy/helm", "tests/deploy")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("values", [[], [dl.CI_VALUES]], ids=["default", "capabilities"])
def test_rendered_chart_is_yamllint_clean(values):
    for template, text in dl.render(values).items():
        if not text.strip():
            continue
        r = yamllint("-", stdin=text.lstrip("\n"))
        assert r.returncode == 0, f"{template}:\n{r.stdout}{r.stderr}\n{text}"


def test_kustomization_lists_the_daemon_manifests():
    k = yaml.safe_load((dl.KUBERNETES_DIR / "kustomization.yaml").read_text())
    listed = sorted(k["resources"])
    want = sorted(p.name for p in dl.kubernetes_files() if p.name != "example-agent-pod.yaml")
    assert listed == want


# --- the daemon's pod -----------------------------------------------------------------------


def test_host_pid_and_no_api_token(variant):
    name, objs = variant
    d = dl.daemon(objs)
    assert d.pod["hostPID"] is True, "the daemon reads callers' /proc/<pid> and tags host pids"
    assert not d.pod.get("hostNetwork"), "metrics listen on 0.0.0.0: keep them in the pod's netns"
    assert d.pod["automountServiceAccountToken"] is False
    sa = dl.one(objs, "ServiceAccount", d.pod["serviceAccountName"])
    assert sa["automountServiceAccountToken"] is False


def test_rolling_update_one_node_at_a_time_never_two_daemons(variant):
    _, objs = variant
    strategy = dl.daemon(objs).ds["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 1
    assert (
        strategy["rollingUpdate"].get("maxSurge", 0) == 0
    ), "two daemons would fight over the pins"


def test_daemon_runs_as_root_with_a_read_only_root(variant):
    _, objs = variant
    sc = dl.daemon(objs).container["securityContext"]
    assert sc["runAsUser"] == 0
    assert sc["readOnlyRootFilesystem"] is True


def test_privileges(variant):
    name, objs = variant
    d = dl.daemon(objs)
    sc = d.container["securityContext"]
    if PRIVILEGED[name]:
        assert sc["privileged"] is True
        assert "capabilities" not in sc
        assert d.mounts["bpffs"]["mountPropagation"] == "Bidirectional"
    else:
        assert sc["privileged"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert set(sc["capabilities"]["add"]) >= set(dl.CAPABILITIES)
        if name == "chart-default-unprivileged":
            assert sc["capabilities"]["add"] == dl.CAPABILITIES, "the documented default set"
        assert not [c for c in sc["capabilities"]["add"] if c.startswith("CAP_")]
        assert sc["appArmorProfile"] == {"type": "Unconfined"}, "AppArmor's default denies pinning"
        assert sc["seLinuxOptions"]["type"] == "spc_t"
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert d.mounts["bpffs"]["mountPropagation"] == "HostToContainer"
        (init,) = d.pod["initContainers"]
        assert "bpf_fs" in " ".join(init["command"]), "the host's bpffs is required"
        assert init["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert init["volumeMounts"][0]["mountPath"] == "/sys/fs/bpf"


def test_bidirectional_propagation_only_in_privileged_containers(variant):
    """The API server refuses Bidirectional mounts in unprivileged containers, a rule the
    OpenAPI schema does not carry."""
    _, objs = variant
    for obj in objs:
        spec = (
            obj["spec"]["template"]["spec"] if obj["kind"] == "DaemonSet" else obj.get("spec", {})
        )
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            privileged = c.get("securityContext", {}).get("privileged") is True
            for m in c.get("volumeMounts", []):
                if m.get("mountPropagation") == "Bidirectional":
                    assert privileged, f"{c['name']}: {m['mountPath']}"


def test_host_mounts(variant):
    _, objs = variant
    d = dl.daemon(objs)
    by_host = {v["hostPath"]["path"]: n for n, v in d.volumes.items() if "hostPath" in v}
    for path in dl.HOST_MOUNTS:
        assert path in by_host, f"{path} is not mounted from the host"
        m = d.mounts[by_host[path]]
        # The daemon uses these paths as is; cgroup2 must be the host's root at the very
        # path (it attaches at the first cgroup2 mount it finds).
        assert m["mountPath"] == path
    for name in ("securityfs", "btf", "cgroup"):
        assert d.mounts[name].get("readOnly") is True, name
    assert d.volumes["bpffs"]["hostPath"]["type"] == "Directory"


def test_every_path_the_daemon_writes_is_on_the_host(variant):
    """What a new pod needs from the old one (pins, state, socket, audit log) must be on
    hostPath volumes mounted at the same path."""
    _, objs = variant
    d = dl.daemon(objs)
    for field, path in dl.config_dirs(d.config).items():
        m = d.mount_for(path)
        assert m is not None, f"{field} {path} is not on a volume"
        v = d.volumes[m["name"]]
        assert "hostPath" in v, f"{field} {path} is on {m['name']}, not a hostPath"
        assert v["hostPath"]["path"] == m["mountPath"], f"{field}: mounted elsewhere on the host"
        assert not m.get("readOnly"), f"{field} {path} must be writable"
    assert d.config["pin_dir"].startswith("/sys/fs/bpf/")
    assert d.mount_for(d.config["pin_dir"])["mountPath"] == "/sys/fs/bpf"


def test_metrics_port_probes_and_prometheus_annotations(variant):
    _, objs = variant
    d = dl.daemon(objs)
    host, port = d.config["metrics"]["addr"].rsplit(":", 1)
    assert host == "0.0.0.0", "the kubelet and Prometheus reach the pod IP, not its loopback"
    (p,) = [p for p in d.container["ports"] if p["name"] == "metrics"]
    assert p["containerPort"] == int(port)
    assert p.get("protocol", "TCP") == "TCP"
    ready = d.container["readinessProbe"]["httpGet"]
    live = d.container["livenessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/readyz", "metrics")
    assert (live["path"], live["port"]) == ("/healthz", "metrics")
    ann = d.ds["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == port
    assert ann["prometheus.io/path"] == "/metrics"


def test_resources_and_scheduling(variant):
    name, objs = variant
    d = dl.daemon(objs)
    res = d.container["resources"]
    assert {"cpu", "memory"} <= set(res["requests"])
    assert "memory" in res["limits"]
    assert d.pod["nodeSelector"]["kubernetes.io/os"] == "linux"
    if name != "chart-capabilities":
        assert {"operator": "Exists"} in d.pod["tolerations"], "every node, whatever its taints"


def test_config_is_one_the_daemon_accepts(variant):
    """Unknown fields are errors for the daemon; the Rust test `upgrade.rs` parses the
    shipped ConfigMap with the daemon's own parser."""
    _, objs = variant
    d = dl.daemon(objs)
    assert dl.unknown_keys(d.config, dl.default_config()) == []
    assert d.config["socket"]["path"].startswith("/")
    assert d.container["args"] == ["daemon", "--config", "/etc/leash/config.yaml"]
    assert d.mounts["config"]["mountPath"] == "/etc/leash"


def test_namespaces_and_references_agree(variant):
    _, objs = variant
    d = dl.daemon(objs)
    ns = d.ds["metadata"]["namespace"]
    for obj in objs:
        if obj["kind"] in ("ServiceAccount", "ConfigMap", "DaemonSet"):
            assert obj["metadata"]["namespace"] == ns
    for ns_obj in (o for o in objs if o["kind"] == "Namespace" and o["metadata"]["name"] == ns):
        assert ns_obj["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    labels = d.ds["spec"]["template"]["metadata"]["labels"]
    for k, v in d.ds["spec"]["selector"]["matchLabels"].items():
        assert labels[k] == v


# --- the example agent ----------------------------------------------------------------------


def agent_variants():
    return {
        "kubernetes": dl.plain_objects(),
        "chart-capabilities": dl.objects(dl.render([dl.CI_VALUES])),
    }


@pytest.mark.parametrize("name", ["kubernetes", "chart-capabilities"])
def test_example_agent_reaches_the_socket_and_runs_under_leash_run(name):
    objs = agent_variants()[name]
    d = dl.daemon(objs)
    pod = dl.one(objs, "Pod", "example-agent")
    spec = pod["spec"]
    sock = d.config["socket"]["path"]
    sock_dir = posixpath.dirname(sock)
    (agent,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (run_mount,) = [m for m in agent["volumeMounts"] if volumes[m["name"]].get("hostPath")]
    assert volumes[run_mount["name"]]["hostPath"]["path"] == d.host_path_of("run") == sock_dir
    assert run_mount["mountPath"] == sock_dir
    assert run_mount.get("readOnly") is True
    assert {"name": "LEASH_SOCKET", "value": sock} in agent["env"]
    cmd = agent["command"]
    assert cmd[0].endswith("/leash") and cmd[1] == "run" and "--" in cmd
    assert "--allow-exec" in cmd
    # The socket is root:socket.group 0660; the agent is not root.
    assert d.config["socket"]["group"] in spec["securityContext"]["supplementalGroups"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert not spec.get("hostPID") and not spec.get("hostNetwork")
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc.get("privileged")
    assert pod["metadata"]["namespace"] != d.ds["metadata"]["namespace"], "agents stay apart"


@pytest.mark.parametrize(
    "values", [[dl.CI_VALUES], [dl.ROOT / "tests/deploy/unprivileged-values.yaml"]]
)
def test_the_bpffs_guard_passes_on_bpffs_and_refuses_anything_else(values):
    """The init container of the capabilities mode, run here: it must accept the host's
    bpffs and refuse a /sys/fs/bpf that is not one."""
    (init,) = dl.daemon(dl.objects(dl.render(values))).pod["initContainers"]
    cmd = init["command"]
    assert cmd[:2] == ["/bin/sh", "-c"]
    fstype = subprocess.run(
        ["stat", "-f", "-c", "%T", "/sys/fs/bpf"], capture_output=True, text=True
    )
    if fstype.stdout.strip() != "bpf_fs":
        pytest.skip("no bpffs at /sys/fs/bpf on this machine")
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    elsewhere = [*cmd[:2], cmd[2].replace("/sys/fs/bpf)", "/sys/fs)")]
    assert elsewhere != cmd
    bad = subprocess.run(elsewhere, capture_output=True, text=True)
    assert bad.returncode != 0 and "no bpffs" in bad.stderr
