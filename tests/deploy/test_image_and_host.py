"""The Dockerfile (builds as CI does; no Docker engine here, so it is checked, not built),
.dockerignore, the systemd unit, and the README's deployment sections."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import deploylib as dl
import pytest
import yaml

DOCKERFILE = dl.ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def args() -> dict[str, str]:
    return dict(a.split("=", 1) for i, a in instructions() if i == "ARG" and "=" in a)


def test_builder_runs_the_same_xtask_commands_as_ci():
    builder, _ = stages()
    runs = " ".join(a for i, a in builder if i == "RUN")
    xtask = re.findall(r"cargo xtask ([a-z]+(?: --[a-z]+)*)", runs)
    assert xtask == ["setup", "build --release"], xtask
    ci = (dl.ROOT / ".ci" / "run").read_text()
    assert re.search(r"^cargo xtask setup$", ci, re.M), ".ci/run runs setup the same way"
    assert "cargo xtask build [--release]" in (dl.ROOT / "README.md").read_text()
    assert "target/release/leash" in runs


def test_images_are_pinned_and_match_the_toolchain():
    a = args()
    rust_image, runtime_image = a["RUST_IMAGE"], a["RUNTIME_IMAGE"]
    cargo = tomllib.loads((dl.ROOT / "Cargo.toml").read_text())
    rust_version = cargo["workspace"]["package"]["rust-version"]
    assert rust_image.endswith(f"rust:{rust_version}-bookworm"), "keep in step with rust-version"
    assert runtime_image.endswith("debian:bookworm-slim"), "the builder's glibc"
    for image in (rust_image, runtime_image):
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")


def test_runtime_image_has_the_binary_only_and_is_not_root():
    _, runtime = stages()
    assert runtime[0] == ("FROM", "${RUNTIME_IMAGE}")
    copies = [a for i, a in runtime if i in ("COPY", "ADD")]
    assert copies == ["--from=builder /out/leash /usr/local/bin/leash"]
    assert not [a for i, a in runtime if i == "RUN"], "nothing else is installed"
    (user,) = [a for i, a in runtime if i == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert ("ENTRYPOINT", '["/usr/local/bin/leash"]') in runtime
    # The daemon's pod overrides the user: runAsUser 0 with its capabilities.
    ds = dl.one(dl.plain_objects(), "DaemonSet")
    assert ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] == 0


def test_dockerignore_keeps_the_workspace_and_drops_the_rest():
    ignored = {
        line.strip()
        for line in (dl.ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", "target"} <= ignored
    cargo = tomllib.loads((dl.ROOT / "Cargo.toml").read_text())
    needed = {"Cargo.toml", "Cargo.lock", ".cargo", *cargo["workspace"]["members"]}
    for pattern in ignored:
        for path in needed:
            assert not (pattern == path or path.startswith(pattern.rstrip("/") + "/")), (
                pattern,
                path,
            )


# --- systemd ----------------------------------------------------------------------------------


def unit() -> dict[str, list[str]]:
    """`Key` -> values, over all sections (systemd allows a key more than once)."""
    out: dict[str, list[str]] = {}
    for line in dl.SYSTEMD_UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_runs_the_daemon_with_the_capabilities_bpf_needs():
    u = unit()
    assert u["ExecStart"] == ["/usr/local/bin/leash daemon --config /etc/leash/config.yaml"]
    caps = set(u["CapabilityBoundingSet"][0].split())
    assert {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_CHOWN"} <= caps
    assert u["NoNewPrivileges"] == ["yes"]
    assert u["AssertPathIsMountPoint"] == ["/sys/fs/bpf"], "pins must be on the host's bpffs"
    assert "KillSignal" not in u or u["KillSignal"] == ["SIGTERM"], "SIGTERM keeps enforcement"


def test_unit_hardening_does_not_break_bpf_or_grants():
    u = unit()
    assert u["ProtectSystem"] == ["strict"]
    # Each of these would hide or remount what the daemon must see or write.
    assert "ProtectKernelTunables" not in u, "makes /sys (and /sys/fs/bpf) read-only"
    assert "PrivateTmp" not in u, "exec grants under /tmp would resolve in another /tmp"
    assert u.get("ProtectHome", ["no"])[0] in ("no", "read-only")
    assert u.get("ProtectProc", ["default"])[0] == "default", "callers' /proc/<pid> must be visible"
    assert "ProcSubset" not in u
    assert "SystemCallFilter" not in u, "bpf(2) and perf_event_open(2) are not in @system-service"


def test_unit_directories_match_the_default_config():
    u = unit()
    c = dl.default_config()
    assert u["RuntimeDirectory"] == ["leash"] and c["socket"]["path"].startswith("/run/leash/")
    assert u["StateDirectory"] == ["leash"] and c["state_dir"] == "/var/lib/leash"
    assert u["LogsDirectory"] == ["leash"] and c["audit_log"].startswith("/var/log/leash/")
    assert u["RuntimeDirectoryMode"] == ["0755"], "clients reach the socket inside"
    assert c["pin_dir"].startswith("/sys/fs/bpf/")


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_unit_passes_systemd_analyze_verify(tmp_path):
    tool = systemd_analyze()
    r = subprocess.run([tool, "verify", str(dl.SYSTEMD_UNIT)], capture_output=True, text=True)
    # The only complaint allowed: leash is not installed on this machine.
    complaints = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if line.strip() and "Command /usr/local/bin/leash is not executable" not in line
    ]
    assert complaints == [], "\n".join(complaints)
    broken = tmp_path / "leash.service"
    broken.write_text(
        dl.SYSTEMD_UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=bogus")
    )
    r = subprocess.run([tool, "verify", str(broken)], capture_output=True, text=True)
    assert "bogus" in r.stdout + r.stderr, "verify reports a bad setting"


def test_unit_exposure_stays_low():
    tool = systemd_analyze()
    r = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=50", "--no-pager", str(dl.SYSTEMD_UNIT)],
        capture_output=True,
        text=True,
    )
    if "--offline" in r.stderr or "--threshold" in r.stderr:
        pytest.skip(f"systemd-analyze too old: {r.stderr.strip()}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr


# --- README -------------------------------------------------------------------------------------


def test_readme_has_the_deployment_sections_and_their_paths_exist():
    readme = (dl.ROOT / "README.md").read_text()
    for heading in ("## Deploy on Kubernetes", "## Run on a host with systemd"):
        assert re.search(rf"^{re.escape(heading)}$", readme, re.M), heading
    for path in set(re.findall(r"(?<![\w/])((?:tests/)?deploy/[\w./-]+\w)", readme)):
        assert (dl.ROOT / path).exists(), f"README names {path}, which does not exist"


def test_values_in_the_ci_file_are_valid_yaml_mappings():
    assert isinstance(yaml.safe_load(dl.CI_VALUES.read_text()), dict)
