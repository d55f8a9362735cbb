"""DVC moves the tiling outputs through real remotes: a local folder and an S3 server.

`dvc repro tiling` runs `kedro run --pipelines=tiling` from dvc.yaml, the outputs are
pushed, deleted (with the local cache), pulled back and compared byte for byte.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import pytest
import yaml

from .conftest import make_project, run, venv_env

pytestmark = pytest.mark.slow


def stage_outs(root: Path, stage: str) -> list[Path]:
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]
    return [root / (next(iter(o)) if isinstance(o, dict) else o) for o in spec["outs"]]


def snapshot(paths: list[Path], root: Path) -> dict[str, str]:
    files = {}
    for path in paths:
        for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
            files[file.relative_to(root).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
    return files


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory, cmu_slide) -> Path:
    root = make_project(tmp_path_factory.mktemp("dvc") / "project", [cmu_slide])
    run(["git", "init", "-q"], cwd=root)
    run(["dvc", "init", "-q"], cwd=root)
    run(["dvc", "repro", "tiling"], cwd=root)
    assert (root / "dvc.lock").is_file()
    return root


def round_trip(root: Path, remote: str, env: dict[str, str]) -> None:
    outs = stage_outs(root, "tiling")
    before = snapshot(outs, root)
    assert any(name.endswith("slides.parquet") for name in before)
    assert any(name.startswith("data/08_reporting/tiling_overview/") for name in before)
    run(["dvc", "push", "-r", remote, "tiling"], cwd=root, env=env)
    for out in outs:
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    shutil.rmtree(root / ".dvc" / "cache")
    assert snapshot(outs, root) == {}
    run(["dvc", "pull", "-r", remote, "tiling"], cwd=root, env=env)
    assert snapshot(outs, root) == before
    status = run(["dvc", "status", "tiling"], cwd=root, env=env)
    assert "up to date" in status.stdout.lower() or status.stdout.strip() == ""


def test_local_remote_round_trip(dvc_repo, tmp_path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "--force", "folder", str(remote)], cwd=dvc_repo)
    round_trip(dvc_repo, "folder", venv_env())
    assert any(remote.rglob("*"))  # the objects really went there


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_s3_remote_round_trip(dvc_repo):
    """Through dvc-s3 against moto's S3 server on loopback."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        env = venv_env() | {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # pragma: allowlist secret
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="histocluster-dvc")
        run(["dvc", "remote", "add", "--force", "s3", "s3://histocluster-dvc/cache"], cwd=dvc_repo)
        run(["dvc", "remote", "modify", "s3", "endpointurl", endpoint], cwd=dvc_repo)
        round_trip(dvc_repo, "s3", env)
        stored = s3.list_objects_v2(Bucket="histocluster-dvc", Prefix="cache/")
        assert stored.get("KeyCount", 0) > 0
    finally:
        server.stop()
