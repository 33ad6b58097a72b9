"""`vm-backup sync` against gcp-storage-emulator, through the real google-cloud-storage client."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.cloud import storage

from vm_backup_cli.__main__ import main
from vm_backup_cli.sync_plan import MANAGED_METADATA_KEY, MANIFEST_PREFIX

EXPECTED = {
    "dags/gce_vm_backup_dags.py",
    "dags/gce_vm_backup.yaml",
    "dags/gce_vm_backup.compiled.json",  # written by sync beside the valid config
    "plugins/operators/gce_vm_backup/__init__.py",
    "plugins/operators/gce_vm_backup/compute/hook.py",
    "plugins/operators/gce_vm_backup/data/seed.json",
}


def _objects(bucket: str) -> dict[str, bytes]:
    """Every object but the sync manifests."""
    client = storage.Client(project="test")
    return {
        blob.name: blob.download_as_bytes()
        for blob in client.list_blobs(bucket)
        if not blob.name.startswith(MANIFEST_PREFIX)
    }


def _sync(repo: Path, bucket: str, *extra: str) -> int:
    return main(["sync", "--bucket", f"gs://{bucket}", "--source", str(repo), "--project", "test", *extra])


def test_first_sync_uploads_dags_and_plugins_but_nothing_excluded(storage_emulator, repo, capsys):
    assert _sync(repo, storage_emulator) == 0
    assert set(_objects(storage_emulator)) == EXPECTED
    assert "uploaded 6" in capsys.readouterr().out


def test_second_sync_with_no_change_uploads_nothing(storage_emulator, repo, capsys):
    _sync(repo, storage_emulator)
    capsys.readouterr()
    assert _sync(repo, storage_emulator) == 0
    assert "uploaded 0 (0 bytes), deleted 0, unchanged 6" in capsys.readouterr().out


def test_one_changed_file_is_the_only_upload(storage_emulator, repo, capsys):
    _sync(repo, storage_emulator)
    (repo / "plugins/operators/gce_vm_backup/compute/hook.py").write_text("X = 2\n")
    capsys.readouterr()
    assert _sync(repo, storage_emulator) == 0
    out = capsys.readouterr().out
    assert "upload gs://composer-test-bucket/plugins/operators/gce_vm_backup/compute/hook.py" in out
    assert "uploaded 1 " in out
    assert _objects(storage_emulator)["plugins/operators/gce_vm_backup/compute/hook.py"] == b"X = 2\n"


def test_deleted_local_file_is_kept_remotely_without_delete_flag(storage_emulator, repo):
    _sync(repo, storage_emulator)
    (repo / "plugins/operators/gce_vm_backup/compute/hook.py").unlink()
    assert _sync(repo, storage_emulator) == 0
    assert "plugins/operators/gce_vm_backup/compute/hook.py" in _objects(storage_emulator)


def test_delete_removes_only_stale_objects_this_command_uploaded(storage_emulator, repo):
    bucket = storage.Client(project="test").bucket(storage_emulator)
    foreign = {
        "dags/other_team_dag.py": b"# another team's DAG in the same folder\n",
        "dags/airflow_monitoring.py": b"# managed by Composer\n",
        "data/keep.csv": b"a,b\n",
    }
    for name, content in foreign.items():
        bucket.blob(name).upload_from_string(content)
    _sync(repo, storage_emulator)
    (repo / "plugins/operators/gce_vm_backup/compute/hook.py").unlink()

    assert _sync(repo, storage_emulator, "--delete") == 0

    objects = _objects(storage_emulator)
    assert "plugins/operators/gce_vm_backup/compute/hook.py" not in objects
    for name, content in foreign.items():
        assert objects[name] == content
    assert set(objects) == (EXPECTED - {"plugins/operators/gce_vm_backup/compute/hook.py"}) | set(foreign)


def test_uploaded_objects_carry_the_managed_marker(storage_emulator, repo):
    _sync(repo, storage_emulator)
    blob = storage.Client(project="test").bucket(storage_emulator).get_blob("dags/gce_vm_backup.yaml")
    assert blob.metadata == {MANAGED_METADATA_KEY: "test"}


def test_dry_run_prints_the_plan_and_changes_nothing(storage_emulator, repo, capsys):
    assert _sync(repo, storage_emulator, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "upload  gs://composer-test-bucket/dags/gce_vm_backup.yaml" in out
    assert "nothing was changed" in out
    assert _objects(storage_emulator) == {}


def test_dry_run_with_delete_lists_the_stale_object_and_keeps_it(storage_emulator, repo, capsys):
    _sync(repo, storage_emulator)
    (repo / "dags/gce_vm_backup_dags.py").unlink()
    capsys.readouterr()
    assert _sync(repo, storage_emulator, "--delete", "--dry-run") == 0
    assert "delete  gs://composer-test-bucket/dags/gce_vm_backup_dags.py" in capsys.readouterr().out
    assert "dags/gce_vm_backup_dags.py" in _objects(storage_emulator)


def test_broken_config_uploads_nothing_and_names_file_group_and_key(storage_emulator, repo, capsys):
    config = repo / "dags/gce_vm_backup.yaml"
    config.write_text(config.read_text().replace('"@daily"', '"61 * * * *"'))
    assert _sync(repo, storage_emulator) == 1
    err = capsys.readouterr().err
    assert "gce_vm_backup.yaml" in err
    assert "web" in err
    assert "schedule" in err
    assert "nothing was uploaded" in err
    assert _objects(storage_emulator) == {}


def test_missing_bucket_is_one_clear_line(storage_emulator, repo, capsys):
    assert _sync(repo, "no-such-bucket") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "gs://no-such-bucket not found" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sync"], "one of the arguments --bucket --environment is required"),
        (["sync", "--bucket", "b", "--environment", "e"], "not allowed with argument"),
        (["sync", "--environment", "e"], "--environment needs --location"),
        (["sync", "--bucket", "b", "--location", "europe-west1"], "--location goes with --environment"),
    ],
)
def test_usage_errors_exit_2_and_name_the_argument(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_source_without_dags_or_plugins_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sync", "--bucket", "b", "--source", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--source" in capsys.readouterr().err


def test_bucket_with_a_path_is_a_usage_error(repo, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sync", "--bucket", "gs://b/dags", "--source", str(repo)])
    assert exit_info.value.code == 2
    assert "--bucket: 'gs://b/dags' is not a bucket name" in capsys.readouterr().err


def _environments_client(monkeypatch, *, prefix=None, error=None):
    from unittest.mock import create_autospec

    from google.cloud.orchestration.airflow.service_v1 import EnvironmentsClient
    from google.cloud.orchestration.airflow.service_v1.types import Environment, EnvironmentConfig

    client = create_autospec(EnvironmentsClient, instance=True)
    if error is not None:
        client.get_environment.side_effect = error
    else:
        client.get_environment.return_value = Environment(config=EnvironmentConfig(dag_gcs_prefix=prefix))
    monkeypatch.setattr(
        "google.cloud.orchestration.airflow.service_v1.EnvironmentsClient", lambda *a, **k: client
    )
    return client


def test_environment_name_is_resolved_to_its_bucket(storage_emulator, repo, monkeypatch):
    client = _environments_client(monkeypatch, prefix=f"gs://{storage_emulator}/dags")
    argv = ["sync", "--environment", "vm-backup", "--location", "europe-west1", "--project", "test"]
    assert main([*argv, "--source", str(repo)]) == 0
    client.get_environment.assert_called_once_with(
        name="projects/test/locations/europe-west1/environments/vm-backup"
    )
    assert set(_objects(storage_emulator)) == EXPECTED


def test_unknown_environment_is_one_clear_line(repo, monkeypatch, capsys):
    from google.api_core.exceptions import NotFound

    _environments_client(monkeypatch, error=NotFound("environment not found"))
    argv = ["sync", "--environment", "nope", "--location", "europe-west1", "--project", "test"]
    assert main([*argv, "--source", str(repo)]) == 1
    assert "--environment: 'nope' not found in test/europe-west1" in capsys.readouterr().err


def test_the_packages_airflowignore_is_synced_and_keeps_the_plugin_loader_out_of_its_modules():
    """Airflow's plugin loader runs every .py under plugins/ as a top-level module named after its file
    (``config``, ``hook``...): the package's .airflowignore, synced despite the hidden-files rule, keeps
    it to the UI plugin's file."""
    from airflow._shared.module_loading import find_path_from_directory

    from vm_backup_cli.sync_plan import scan_local

    root = Path(__file__).resolve().parents[2]
    names = {f.object_name for f in scan_local(root).files}
    assert "plugins/operators/gce_vm_backup/.airflowignore" in names
    assert not any(name.endswith("/.DS_Store") or "/__pycache__/" in name for name in names)
    loaded = sorted(
        Path(p).relative_to(root).as_posix()
        for p in find_path_from_directory(str(root / "plugins"), ".airflowignore", "glob")
        if p.endswith(".py")
    )
    assert loaded == ["plugins/gce_vm_backup_ui_plugin.py"]
