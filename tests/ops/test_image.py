"""The container image (tools/build-image, README "Container image"): it builds without a container daemon
and without a registry of base images, and run with a read-only root file system on the embedded default it
serves /readyz 200 by its own HEALTHCHECK, as the non-root user 10001, writing only to its /data volume,
with the contracts and the migrations inside; its entry point is `intygstjanst serve`, the command the Helm
chart runs (tests/ops/test_helm.py checks the chart names this image). The build, its time, the image's size
and what is inside (Debian's packages, the Python distributions) are printed.

Selected by `pytest -m image`. Needs root, buildah, mmdebstrap, podman and runc (`.ci/run` installs them);
skipped with that reason otherwise. The build takes about a minute from scratch on two cores (Debian's
mirror and PyPI); the Debian root file system and pip's downloads are cached under IMAGE_CACHE (default
~/.cache/intygstjanst-image) for the next run.

How it runs the image: podman with runc and cgroupfs (crun refuses a machine whose cgroups are in hybrid
mode, as in some CI containers), file and process limits below the machine's (raising them needs a
capability such containers lack), and no network (`--network none`): the service listens on the
container's own loopback port 8080, where the image's HEALTHCHECK looks, and no port of the machine is
taken. Beyond loopback the service refuses to start on the embedded default, as outside a container.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
IMAGE = f"localhost/intygstjanst:{VERSION}"
USER_ID = 10001
# `intygstjanst serve` refusing its settings (service/cli.py).
REFUSED = 2

MISSING = [tool for tool in ("buildah", "mmdebstrap", "podman", "runc") if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.image,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"{', '.join(MISSING)} not installed: apt-get install --no-install-recommends buildah "
        "mmdebstrap podman runc uidmap (as .ci/run does)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="building the image needs root (mmdebstrap, buildah)"),
]


@dataclass(frozen=True)
class Built:
    work: Path
    seconds: float
    log: str

    def podman(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        command = [
            "podman",
            "--root",
            str(self.work / "storage"),
            "--runroot",
            str(self.work / "run"),
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            *args,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def run(self, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
        """A throwaway container of the image, as `podman run` gives it its arguments."""
        chosen = ("--entrypoint", entrypoint) if entrypoint else ()
        return self.podman("run", "--rm", *CONTAINED, "--no-healthcheck", *chosen, IMAGE, *args, check=False)

    def config(self) -> dict[str, object]:
        inspected = json.loads(self.podman("image", "inspect", IMAGE).stdout)
        return dict(inspected[0])


# Every container of these tests: no network, a read-only root, limits below the machine's.
CONTAINED = (
    "--network",
    "none",
    "--read-only",
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=4096:4096",
)


def build(work: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "tools" / "build-image")],
        cwd=ROOT,
        env={**os.environ, "IMAGE_WORK": str(work)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def remove(work: Path) -> None:
    storage = ("--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs")
    subprocess.run(["buildah", *storage, "rm", "--all"], capture_output=True, check=False)
    shutil.rmtree(work, ignore_errors=True)


def short_folder() -> Path:
    """A folder for buildah's storage whose run root podman takes: at most 50 characters."""
    return Path(tempfile.mkdtemp(prefix="intyg-image-", dir="/tmp"))


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    work = short_folder()
    began = time.monotonic()
    done = build(work)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        pytest.fail(f"tools/build-image failed ({done.returncode}) after {seconds:.0f} s:\n{done.stderr}")
    image = Built(work, seconds, done.stderr)
    try:
        yield image
    finally:
        image.podman("rm", "--all", "--force", check=False)
        remove(work)


@pytest.fixture(scope="module")
def container(built: Built) -> Iterator[str]:
    """The image serving on the embedded default (`serve --port 8080` on the container's loopback), its
    /data an anonymous volume (the image's VOLUME), ready by its own HEALTHCHECK."""
    name = f"intygstjanst-test-{uuid.uuid4().hex[:8]}"
    built.podman("run", "--detach", "--name", name, *CONTAINED, IMAGE, "serve", "--port", "8080")
    try:
        deadline = time.monotonic() + 60
        while (check := built.podman("healthcheck", "run", name, check=False)).returncode != 0:
            if time.monotonic() > deadline:
                logs = built.podman("logs", name, check=False)
                pytest.fail(f"no healthy container within 60 s: {check.stdout}\n{logs.stdout}\n{logs.stderr}")
            time.sleep(0.5)
        yield name
    finally:
        built.podman("stop", "--time", "20", name, check=False)
        built.podman("rm", "--force", name, check=False)


def test_the_image_builds_and_prints_its_size_and_contents(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    size = int(str(built.config()["Size"]))
    packages = built.run("-W", "-f", "${Package}=${Version}\\n", entrypoint="dpkg-query")
    distributions = built.run(
        "-c",
        "import importlib.metadata as m; print('\\n'.join(sorted(f\"{d.metadata['Name']}=={d.version}\" "
        "for d in m.distributions())))",
        entrypoint="python",
    )
    assert packages.returncode == 0, packages.stderr
    assert distributions.returncode == 0, distributions.stderr
    debian = packages.stdout.split()
    python = distributions.stdout.split()
    with capsys.disabled():
        print(f"\n{built.log}")
        print(f"image {IMAGE}: built in {built.seconds:.0f} s, {size / 1e6:.0f} MB uncompressed")
        print(f"Debian packages ({len(debian)}): {' '.join(debian)}")
        print(f"Python distributions ({len(python)}): {' '.join(python)}")
    names = {p.split("=")[0] for p in debian}
    assert {"python3.11", "tzdata", "libstdc++6"} <= names
    # The build's tools are gone: no pip in the venv, no venv module, no compiler.
    assert not names & {"python3-venv", "python3-pip-whl", "python3-distutils", "gcc", "apt", "perl"}
    locked = dict(
        line.split("==") for line in (ROOT / "requirements.lock").read_text().split() if "==" in line
    )
    versions = dict(p.split("==") for p in python)
    assert versions.pop("intygstjanst") == VERSION
    # Every other distribution is the locked one, and only the service's (no test tools, no pip).
    for name, version in versions.items():
        assert locked.get(name) == version, f"{name} {version} is not the locked version"
    assert not {"pip", "setuptools", "pytest", "ruff", "mypy"} & set(versions)


def test_the_entry_point_is_intygstjanst_serve_with_a_health_check_and_labels(built: Built) -> None:
    config = built.config()
    inner = dict(config["Config"])  # type: ignore[call-overload]
    assert inner["Entrypoint"] == ["intygstjanst"]
    assert inner["Cmd"] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert inner["User"] == f"{USER_ID}:{USER_ID}"
    assert inner["WorkingDir"] == "/data"
    assert "/data" in inner["Volumes"]
    assert config["Healthcheck"]["Test"] == ["CMD", "intygstjanst-healthcheck"]  # type: ignore[index]
    labels = inner["Labels"]
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    assert labels["org.opencontainers.image.revision"].startswith(revision.strip())
    assert labels["org.opencontainers.image.version"] == VERSION


def test_the_image_serves_readyz_on_the_embedded_default_with_a_read_only_root(
    built: Built, container: str
) -> None:
    inspected = json.loads(built.podman("container", "inspect", container).stdout)[0]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    ready = built.podman("exec", container, "intygstjanst-healthcheck", "http://127.0.0.1:8080/readyz")
    assert ready.stdout.strip() == "http://127.0.0.1:8080/readyz: 200"


def test_the_commands_the_chart_runs_are_in_the_image(built: Built, container: str) -> None:
    """The chart's command (`intygstjanst serve`, the migration Job's `intygstjanst migrate`) and its
    preStop hook (`sleep`), helm/intygstjanst/templates."""
    for command in ("intygstjanst", "sleep"):
        found = built.podman("exec", container, "sh", "-c", f"command -v {command}", check=False)
        assert found.returncode == 0, f"{command} is not on the image's PATH"
    assert "migrate" in built.podman("exec", container, "intygstjanst", "--help").stdout


def test_it_runs_as_the_non_root_user(built: Built, container: str) -> None:
    assert built.podman("exec", container, "id", "-u").stdout.strip() == str(USER_ID)
    status = built.podman("exec", container, "cat", "/proc/1/status").stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(USER_ID)] * 4


def test_it_writes_only_its_data_volume(built: Built, container: str) -> None:
    refused = built.podman("exec", container, "touch", "/opt/intygstjanst/written", check=False)
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr
    # The embedded default's database and development keys, in the working directory /data.
    written = set(built.podman("exec", container, "ls", "/data").stdout.split())
    assert {"intygstjanst.db", "intygstjanst-dev-keys.json", "intygstjanst-dev-audit-key.pem"} <= written


def test_the_contracts_and_migrations_are_inside(built: Built, container: str) -> None:
    base = "http://127.0.0.1:8080"
    for path in (
        "/contracts/service.xsd",
        "/clinicalprocess/healthcond/certificate/RegisterCertificate/3/rivtabp21?wsdl",
    ):
        served = built.podman("exec", container, "intygstjanst-healthcheck", base + path, check=False)
        assert served.returncode == 0, served.stdout
    # /readyz above is 200 only with the schema at the migration head; the migrations are the wheel's.
    listed = built.podman(
        "exec", container, "python", "-c", "import service.store.migration as m; print(m.MIGRATIONS)"
    )
    assert "/opt/intygstjanst/lib/python3.11/site-packages/service/store/migrations" in listed.stdout


def test_the_default_command_refuses_the_embedded_default_beyond_loopback(built: Built) -> None:
    """`serve --host 0.0.0.0` (the chart's, with the callers' CA, permissions and TLS or proxies) refuses
    the embedded default's unidentified SOAP callers, in the image as anywhere."""
    done = built.podman("run", "--rm", *CONTAINED, "--no-healthcheck", IMAGE, check=False)
    assert done.returncode == REFUSED, done.stderr
    assert "beyond loopback" in done.stderr


def test_a_second_build_of_the_commit_gives_the_same_image_but_the_builders_container_id(
    built: Built,
) -> None:
    """Reproducible: every time stamp is the commit's (SOURCE_DATE_EPOCH), the packages and wheels the same
    (on one day, or one DEBIAN_SNAPSHOT: the Debian tarball is cached by that key, so this compares the
    build on top of it). Docker's format names the working container in the config (tools/build-image)."""
    work = short_folder()
    try:
        done = build(work)
        assert done.returncode == 0, done.stderr
        again = Built(work, 0, done.stderr)
        first, second = built.config(), again.config()
        assert first["RootFS"] == second["RootFS"]  # the one layer, by its digest
        assert first["Config"] == second["Config"]
        assert first["Created"] == second["Created"]
        assert first["Healthcheck"] == second["Healthcheck"]
    finally:
        remove(work)
