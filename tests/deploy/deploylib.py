"""Shared helpers of the deployment tests: where things are, loading and rendering the
manifests, and finding the pieces of a DaemonSet that the security checks look at."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helmlite
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
CHART_DIR = ROOT / "deploy" / "helm" / "leash"
CI_VALUES = CHART_DIR / "ci" / "capabilities-values.yaml"
SYSTEMD_UNIT = ROOT / "deploy" / "systemd" / "leash.service"
DEFAULT_CONFIG = ROOT / "agent-userspace" / "src" / "config" / "default.yaml"

# The Kubernetes version the schemas are pinned to, and the oldest one the chart admits
# (Chart.yaml kubeVersion; securityContext.appArmorProfile needs 1.30).
KUBERNETES_VERSION = "1.33.0"
OLDEST_KUBERNETES_VERSION = "1.30.0"

# The capability set of the non-privileged mode, by the chart's defaults.
CAPABILITIES = ["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_RESOURCE", "CHOWN"]

# Host paths the daemon needs, mounted at the same path in the pod.
HOST_MOUNTS = {
    "/sys/fs/bpf",
    "/sys/kernel/security",
    "/sys/kernel/btf",
    "/sys/fs/cgroup",
}


def kubernetes_files() -> list[Path]:
    """The manifests in deploy/kubernetes (not the kustomization)."""
    return sorted(p for p in KUBERNETES_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def plain_objects() -> list[dict]:
    return [d for p in kubernetes_files() for d in load_docs(p)]


def render(
    values: list[Path] = (), extra: dict | None = None, tmp: Path | None = None
) -> dict[str, str]:
    """The chart rendered with `values` files and then `extra` values (written to `tmp`)."""
    files = list(values)
    if extra:
        assert tmp is not None
        f = tmp / "extra-values.yaml"
        f.write_text(yaml.safe_dump(extra))
        files.append(f)
    return helmlite.render_chart(CHART_DIR, files)


def objects(rendered: dict[str, str]) -> list[dict]:
    return [doc for _, doc in helmlite.manifests(rendered)]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@dataclass
class Daemon:
    """The parts of a rendered leash DaemonSet the checks need."""

    ds: dict
    pod: dict
    container: dict
    config: dict
    volumes: dict[str, dict]
    mounts: dict[str, dict]

    def host_path_of(self, mount_name: str) -> str:
        return self.volumes[mount_name]["hostPath"]["path"]

    def mount_for(self, path: str) -> dict | None:
        """The volume mount whose mountPath contains `path` (the deepest one)."""
        best = None
        for m in self.mounts.values():
            mp = m["mountPath"]
            if path == mp or path.startswith(mp.rstrip("/") + "/"):
                if best is None or len(mp) > len(best["mountPath"]):
                    best = m
        return best


def daemon(objs: list[dict]) -> Daemon:
    ds = one(objs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "leash"]
    cm_name = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
    cm = one(objs, "ConfigMap", cm_name)
    config = yaml.safe_load(cm["data"]["config.yaml"])
    return Daemon(
        ds=ds,
        pod=pod,
        container=container,
        config=config,
        volumes={v["name"]: v for v in pod["volumes"]},
        mounts={m["name"]: m for m in container["volumeMounts"]},
    )


def config_dirs(config: dict) -> dict[str, str]:
    """Directories the daemon writes to, by config field."""
    return {
        "socket.path": posixpath.dirname(config["socket"]["path"]),
        "state_dir": config["state_dir"],
        "pin_dir": config["pin_dir"],
        "audit_log": posixpath.dirname(config["audit_log"]),
    }


def default_config() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def unknown_keys(config: Any, known: Any, prefix: str = "") -> list[str]:
    """Keys of `config` that the daemon's default config does not have (the daemon refuses
    unknown fields)."""
    if not isinstance(config, dict):
        return []
    out = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if not isinstance(known, dict) or key not in known:
            out.append(path)
        elif isinstance(known[key], dict):
            out += unknown_keys(value, known[key], path + ".")
    return out
