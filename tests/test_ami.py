"""The GPU AMI's last provisioner, images/ami/scripts/clear-ecs-state.sh, run for real with bash.

No Packer build and no EC2 instance here, so the world around the script is played and the
script is the real one: a scratch tree stands for the build instance's root (ECS_ROOT), and
stand-in `systemctl` and `docker` first on PATH keep the state of the ecs unit and of the
ecs-agent container, record each call with what the agent's data directory held at that moment,
and behave as the agent does when it is stopped: it saves its checkpoint one last time (the
agent's SIGTERM handler makes a final save). So a script that removed the data before stopping
the agent leaves a checkpoint behind, as it would on the build instance.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.conftest import ROOT

AMI = ROOT / "images" / "ami"
SCRIPT = AMI / "scripts" / "clear-ecs-state.sh"
DATA = "var/lib/ecs/data"

# What the AMI must keep, with the content it had: our agent configuration (GPU support, prefer
# cached pulls), the stock AL2023 GPU AMI's own ecs-init configuration, the agent image tarball
# and ecs-init's state that boot loads it from.
KEPT = {
    "etc/ecs/ecs.config": "ECS_ENABLE_GPU_SUPPORT=true\nECS_IMAGE_PULL_BEHAVIOR=prefer-cached\n",
    "var/lib/ecs/ecs.config": "ECS_ENABLE_GPU_SUPPORT=true\n",
    "var/cache/ecs/ecs-agent.tar": "agent image\n",
    "var/cache/ecs/state": "2\n",
}
# The agent's checkpoint as builds leave it: agent.db (agents >= 1.50), ecs_agent_data.json
# (older ones), and a dot file, which the guide's /var/lib/ecs/data/* glob would miss.
CHECKPOINT = {"agent.db": "state", "ecs_agent_data.json": "{}", ".agent.db.tmp": "half a save"}

STAND_IN = """#!{python}
import json, os, sys
tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]
world_path, data = os.environ["STANDIN_WORLD"], os.environ["STANDIN_DATA"]
with open(world_path) as f:
    world = json.load(f)
listing = sorted(os.listdir(data)) if os.path.isdir(data) else None
with open(os.environ["STANDIN_CALLS"], "a") as f:
    f.write(json.dumps({{"tool": tool, "argv": args, "data": listing}}) + "\\n")

def final_save():
    # The agent writes its state as it exits, whoever stops it.
    if os.path.isdir(data):
        with open(os.path.join(data, "agent.db"), "w") as f:
            f.write("final save")

def done(code=0):
    with open(world_path, "w") as f:
        json.dump(world, f)
    sys.exit(code)

if tool == "systemctl" and args == ["stop", "ecs"]:
    if world["unit"] == "active":
        world["unit"] = "inactive"
        if world["container"] == "running" and world["container_follows_unit"]:
            world["container"] = "exited"  # ecs-init stops the agent it started
        final_save()
    done()
if tool == "systemctl" and args and args[0] == "is-active" and args[-1] == "ecs":
    if "--quiet" not in args:
        print(world["unit"])
    done(0 if world["unit"] == "active" else 3)
if tool == "docker" and args == ["inspect", "--format", "{{{{.State.Running}}}}", "ecs-agent"]:
    if world["container"] == "absent":
        print("Error: No such object: ecs-agent", file=sys.stderr)
        done(1)
    print("true" if world["container"] == "running" else "false")
    done()
if tool == "docker" and args == ["stop", "ecs-agent"]:
    if world["container"] == "absent":
        print("Error response from daemon: No such container: ecs-agent", file=sys.stderr)
        done(1)
    if world["container"] == "running":
        world["container"] = "exited"
        final_save()
    print("ecs-agent")
    done()
# Anything else is not part of the world played here (disable, mask, rmi, prune...): refuse it
# loudly, so that the script's exit status shows it.
print(f"stand-in {{tool}}: not played: {{args}}", file=sys.stderr)
done(2)
"""


class World:
    """A scratch root, the stand-ins on PATH, and a way to run the script against them."""

    def __init__(self, tmp_path: Path, container: str, follows_unit: bool) -> None:
        self.root = tmp_path / "root"
        self.data = self.root / DATA
        self.data.mkdir(parents=True)
        for name, text in CHECKPOINT.items():
            (self.data / name).write_text(text)
        for rel, text in KEPT.items():
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_text(text)
        self.state = tmp_path / "world.json"
        self.state.write_text(
            json.dumps({"unit": "active", "container": container, "container_follows_unit": follows_unit})
        )
        self.calls_path = tmp_path / "calls.jsonl"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for tool in ("systemctl", "docker"):
            (bin_dir / tool).write_text(STAND_IN.format(python=sys.executable))
            (bin_dir / tool).chmod(0o755)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "ECS_ROOT": str(self.root),
            "STANDIN_WORLD": str(self.state),
            "STANDIN_DATA": str(self.data),
            "STANDIN_CALLS": str(self.calls_path),
        }

    def run(self, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, "bash", str(SCRIPT)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def calls(self) -> list[dict[str, Any]]:
        if not self.calls_path.exists():
            return []
        return [json.loads(line) for line in self.calls_path.read_text().splitlines()]

    def world(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.state.read_text())
        return state


def assert_kept(world: World) -> None:
    for rel, text in KEPT.items():
        assert (world.root / rel).read_text() == text, rel


def assert_nothing_permanent(world: World) -> None:
    """Only stops and checks: the unit stays enabled and no image is removed (the pre-pulled
    worker image is what the AMI is for); the stand-ins refuse anything else, this says so."""
    for call in world.calls():
        verb = call["argv"][0]
        allowed = {"systemctl": {"stop", "is-active"}, "docker": {"inspect", "stop"}}[call["tool"]]
        assert verb in allowed, call


@pytest.mark.parametrize(
    ("container", "follows_unit"),
    [
        ("running", True),  # the stock AMI: ecs-init runs the agent container and stops it
        ("running", False),  # an agent container that outlives the unit: the script stops it
        ("absent", True),  # no agent container at all (docker knows none)
    ],
    ids=["ecs-init", "container-outlives-unit", "no-container"],
)
def test_stops_the_agent_then_removes_its_checkpoint(
    tmp_path: Path, container: str, follows_unit: bool
) -> None:
    world = World(tmp_path, container, follows_unit)
    result = world.run()
    assert result.returncode == 0, result.stderr
    calls = world.calls()
    stops = [c for c in calls if c["argv"] in (["stop", "ecs"], ["stop", "ecs-agent"])]
    assert stops and stops[0]["tool"] == "systemctl" and stops[0]["argv"] == ["stop", "ecs"]
    # Each stop came while the checkpoint was still there: removal followed the stops.
    for stop in stops:
        assert stop["data"] is not None and "ecs_agent_data.json" in stop["data"], stop
    stopped_container = any(c["tool"] == "docker" and c["argv"] == ["stop", "ecs-agent"] for c in calls)
    assert stopped_container is (container == "running" and not follows_unit)
    assert world.world()["unit"] == "inactive" and world.world()["container"] != "running"
    # The checkpoint, dot file and final save included, is gone; the directory itself stays.
    assert world.data.is_dir() and list(world.data.iterdir()) == []
    assert_kept(world)
    assert_nothing_permanent(world)


def test_running_twice_succeeds(tmp_path: Path) -> None:
    world = World(tmp_path, "running", follows_unit=True)
    first = world.run()
    assert first.returncode == 0, first.stderr
    second = world.run()
    assert second.returncode == 0, second.stderr
    assert world.data.is_dir() and list(world.data.iterdir()) == []
    assert_kept(world)
    assert_nothing_permanent(world)


def test_no_data_directory_is_not_an_error(tmp_path: Path) -> None:
    """An agent that never checkpointed leaves no directory: nothing to clear, nothing made."""
    world = World(tmp_path, "running", follows_unit=True)
    shutil.rmtree(world.data)
    result = world.run()
    assert result.returncode == 0, result.stderr
    assert not world.data.exists()
    assert_kept(world)


def test_a_file_that_cannot_be_removed_fails_the_build(tmp_path: Path) -> None:
    world = World(tmp_path, "running", follows_unit=True)
    held = world.data / "task-engine"
    held.mkdir()
    (held / "held.json").write_text("{}")
    held.chmod(0o555)  # its entries cannot be unlinked...
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        # ...except by a process that may override file permissions, as root may: run the
        # script as root without that capability (CI runs as root).
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
        prefix = (setpriv, "--bounding-set=-dac_override,-fowner", "--")
    try:
        result = world.run(prefix)
    finally:
        held.chmod(0o755)
    assert result.returncode != 0
    assert "is not empty" in result.stderr and "task-engine/held.json" in result.stderr, result.stderr
    # What could be removed was; what was kept is untouched.
    assert sorted(p.name for p in world.data.iterdir()) == ["task-engine"]
    assert_kept(world)


def test_packer_runs_it_last_as_root() -> None:
    options = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
    template = hcl2.loads((AMI / "gpu.pkr.hcl").read_text(), serialization_options=options)
    (build,) = template["build"]
    provisioners = [p["shell"] for p in build["provisioner"]]
    names = [Path(p["script"]).name for p in provisioners]
    # After the configuration, the checks and the pre-pull: nothing may start the agent again.
    assert names[-1] == SCRIPT.name and names.count(SCRIPT.name) == 1, names
    assert {"ecs-gpu-config.sh", "check-gpu.sh", "prepull-image.sh"} <= set(names[:-1]), names
    last = provisioners[-1]
    assert AMI / last["script"].replace("${path.root}/", "") == SCRIPT
    # Root, as systemctl stop and removing the agent's files need; and the real paths: no ECS_ROOT.
    assert "sudo" in last["execute_command"] and "{{ .Path }}" in last["execute_command"]
    assert not any("ECS_ROOT" in v for v in last.get("environment_vars", []))
