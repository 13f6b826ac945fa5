"""The deployment a team runs: ``docker/compose.yaml`` as Debian's ``docker-compose config``
resolves it (no Docker engine needed), and the image's command run directly.

Checked: Apache Kafka in KRaft mode; a one-shot service that creates exactly the topics the
worker uses (names, partitions, compaction as :func:`streams.worker.app.topic_specs` has them),
with partitions, replication and the cleanup policy taken from the environment; two workers of
one consumer group with a state volume each; the demo producer; every ``INTEREST_STREAM_*`` the
file sets is a real setting; and the Dockerfile's ENTRYPOINT + CMD (and each service's command)
is a command line the installed ``interest-stream`` accepts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML, installed with the export extra (transformers) of `make setup`

from streams.settings import ENV_VARS, Settings
from streams.worker.app import topic_specs

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
IMAGE_SERVICES = ("worker-1", "worker-2", "producer")


def compose_config(**env: str) -> dict[str, Any]:
    """``docker-compose config`` of the compose file, with only ``env`` set of our variables."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed: `make setup` installs Debian's package"
    ours = ("INTEREST_STREAM_", "KAFKA_BOOTSTRAP", "PRODUCER_RATE")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    done = subprocess.run(  # noqa: S603
        [binary, "-f", str(COMPOSE), "config"],
        env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


def service_env(config: dict[str, Any], name: str) -> dict[str, str]:
    return {k: "" if v is None else str(v)
            for k, v in config["services"][name].get("environment", {}).items()}  # fmt: skip


def created_topics(config: dict[str, Any]) -> set[tuple[str, int, bool]]:
    """(name, partitions, compacted) of every ``create`` line of the topics service, with its
    environment substituted as the shell would."""
    service = config["services"]["topics"]
    env = service_env(config, "topics")
    script = "\n".join(service["command"]).replace("$$", "$")

    def value(word: str) -> str:
        return re.sub(r"\$(\w+)", lambda m: env[m.group(1)], word.strip('"'))

    found = set()
    for line in script.splitlines():
        pattern = r'\s*create ("[^"]+"|\S+) ("[^"]+"|\S+)( compacted)?( \S+=\S+)?\s*'
        if m := re.fullmatch(pattern, line):
            found.add((value(m.group(1)), int(value(m.group(2))), bool(m.group(3))))
    return found


def test_kafka_runs_in_kraft_mode(config: dict[str, Any]) -> None:
    env = service_env(config, "kafka")
    assert config["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] and "zookeeper" not in json.dumps(config)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # the topics service creates them
    # exactly_once on this one broker: the transaction log must fit on it
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"


def test_the_topics_service_creates_what_the_worker_uses_once(config: dict[str, Any]) -> None:
    topics = config["services"]["topics"]
    assert topics["restart"] == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    worker = Settings.from_env(service_env(config, "worker-1"))
    want = {(s.name, s.partitions, s.compacted) for s in topic_specs(worker)}
    assert created_topics(config) == want
    script = "\n".join(topics["command"])
    assert "--replication-factor \"$$INTEREST_STREAM_REPLICATION_FACTOR\"" in script
    assert "cleanup.policy=$$INTEREST_STREAM_COMPACTED_CLEANUP_POLICY" in script


def test_partitions_replication_compaction_and_names_come_from_the_environment() -> None:
    config = compose_config(
        INTEREST_STREAM_PARTITIONS="12", INTEREST_STREAM_REPLICATION_FACTOR="3",
        INTEREST_STREAM_COMPACTED_CLEANUP_POLICY="compact,delete",
        INTEREST_STREAM_APP_ID="team-a", INTEREST_STREAM_TOPIC_CLICK="team-a.clicks",
        INTEREST_STREAM_PROCESSING_GUARANTEE="exactly_once",
    )  # fmt: skip
    for name in ("topics", *IMAGE_SERVICES):
        settings = Settings.from_env(service_env(config, name))
        assert (settings.partitions, settings.replication_factor, settings.app_id) == (
            12, 3, "team-a"), name  # fmt: skip
        assert settings.compacted_cleanup_policy == "compact,delete"
        assert settings.processing_guarantee == "exactly_once"
    created = created_topics(config)
    assert ("team-a.clicks", 12, False) in created
    assert ("team-a-user_interest-changelog", 12, True) in created
    worker = Settings.from_env(service_env(config, "worker-1"))
    assert created == {(s.name, s.partitions, s.compacted) for s in topic_specs(worker)}


def test_two_workers_of_one_group_each_with_its_state_volume(config: dict[str, Any]) -> None:
    services = config["services"]
    ids, volumes, ports = set(), set(), set()
    for name in ("worker-1", "worker-2"):
        service = services[name]
        assert "command" not in service  # the image's CMD: `worker`
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        settings = Settings.from_env(service_env(config, name))
        assert settings.bootstrap == "kafka:29092" and settings.home == Path("/data")
        ids.add(settings.app_id)
        mounts = [v.split(":") for v in service["volumes"]]  # source:target[:mode]
        volumes |= {m[0] for m in mounts if m[1] == str(settings.home / "worker")}
        ports |= {p["published"] for p in service["ports"]}
    assert ids == {"interest-stream"}  # one consumer group: the partitions are shared
    assert len(volumes) == 2 and len(ports) == 2  # a state folder and a web port each


def test_the_demo_producer_replays_the_sample_data(config: dict[str, Any]) -> None:
    producer = config["services"]["producer"]
    assert producer["command"][0] == "produce" and "--events" in producer["command"]
    assert producer["image"] == config["services"]["worker-1"]["image"]


def test_every_setting_the_file_sets_is_a_real_one(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        ours = {k for k in service.get("environment", {}) if k.startswith("INTEREST_STREAM_")}
        assert ours <= set(ENV_VARS), (name, ours - set(ENV_VARS))
    dockerfile_env = re.findall(r"(INTEREST_STREAM_\w+)=", DOCKERFILE.read_text())
    assert dockerfile_env and set(dockerfile_env) <= set(ENV_VARS)


def image_command() -> list[str]:
    """The Dockerfile's ENTRYPOINT followed by its CMD (both in exec form)."""
    text = DOCKERFILE.read_text()
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert entrypoint and cmd, "the Dockerfile has an exec-form ENTRYPOINT and CMD"
    return [*json.loads(entrypoint.group(1)), *json.loads(cmd.group(1))]


def run_installed(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``argv`` with its program taken from this environment's scripts (the image installs the
    same package with pip, so ``interest-stream`` is the same console script)."""
    program = Path(sys.executable).parent / argv[0]
    assert program.is_file(), f"{argv[0]} is not installed here (pip install -e .)"
    return subprocess.run(  # noqa: S603
        [str(program), *argv[1:]], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_image_command_runs(config: dict[str, Any]) -> None:
    argv = image_command()
    assert argv == ["interest-stream", "worker"]
    done = run_installed([*argv, "--help"])
    assert done.returncode == 0, done.stderr
    assert "Run a worker" in done.stdout
    for name in IMAGE_SERVICES:  # each service's command line is one the CLI accepts
        command = config["services"][name].get("command", argv[1:])
        done = run_installed([argv[0], *command, "--help"])
        assert done.returncode == 0, (name, done.stderr)
