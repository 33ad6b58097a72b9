"""A real gcp-storage-emulator on a free loopback port, used through the real storage client."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

BUCKET = "composer-test-bucket"

VALID_CONFIG = """\
version: 1
deployment: test
groups:
  web:
    schedule: "@daily"
    start_date: "2026-01-01T00:00:00+00:00"
    targets:
      - project: demo-project
        zone: us-central1-a
        instance: web-1
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def storage_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        yield BUCKET
    finally:
        server.stop()


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small fake checkout: a DAG file, a config, a plugin package, and files that must not sync."""
    root = tmp_path / "repo"
    files = {
        "dags/gce_vm_backup_dags.py": "# thin DAG file\n",
        "dags/gce_vm_backup.yaml": VALID_CONFIG,
        "plugins/operators/gce_vm_backup/__init__.py": '"""pkg"""\n',
        "plugins/operators/gce_vm_backup/compute/hook.py": "X = 1\n",
        "plugins/operators/gce_vm_backup/data/seed.json": "{}\n",
        # excluded by default
        "plugins/operators/gce_vm_backup/__pycache__/hook.cpython-311.pyc": "bytecode",
        "plugins/operators/gce_vm_backup/.pytest_cache/v": "x",
        "dags/tests/test_something.py": "def test(): pass\n",
        "dags/.hidden.py": "x = 1\n",
        # outside the synced folders
        "README.md": "# readme\n",
        # excluded by the ignore file
        "dags/scratch/notes.txt": "local notes\n",
        ".vmbackupignore": "scratch/\n",
    }
    return write_tree(root, files)
