"""`vm-backup sync` and the configs' compiled forms: written beside each valid config, uploaded before it,
owned like any object of the deployment, and never uploaded without their config."""

from __future__ import annotations

import json

from gce_vm_backup.config.compiled import compiled_path, read_document
from vm_backup_cli.sync_plan import Manifest, scan_local, upload_rank

from .conftest import VALID_CONFIG
from .test_sync import _objects, _sync

CONFIG = "dags/gce_vm_backup.yaml"
COMPILED = "dags/gce_vm_backup.compiled.json"
MANIFEST = "gce-vm-backup-sync/test.json"


def test_sync_writes_and_uploads_the_compiled_form_of_the_config_as_it_is_now(storage_emulator, repo):
    (repo / COMPILED).write_text("stale\n")
    assert _sync(repo, storage_emulator) == 0
    uploaded = _objects(storage_emulator)[COMPILED]
    assert uploaded == (repo / COMPILED).read_bytes() != b"stale\n"
    assert json.loads(uploaded.splitlines()[0])["key"]  # a compiled form, whose key the DAG file checks
    assert read_document(repo / CONFIG, compiled=True) == read_document(repo / CONFIG)


def test_the_compiled_form_follows_its_config_and_is_owned_by_the_deployment(storage_emulator, repo):
    from google.cloud import storage

    assert _sync(repo, storage_emulator) == 0
    (repo / CONFIG).write_text(VALID_CONFIG.replace("@daily", "@weekly"))
    before = (repo / COMPILED).read_bytes()
    assert _sync(repo, storage_emulator) == 0
    assert _objects(storage_emulator)[COMPILED] == (repo / COMPILED).read_bytes() != before
    bucket = storage.Client(project="test").bucket(storage_emulator)
    manifest = Manifest.from_json(MANIFEST, bucket.blob(MANIFEST).download_as_bytes())
    assert COMPILED in manifest.objects
    # the config gone: its compiled form is not synced either, and --delete removes both
    (repo / CONFIG).unlink()
    assert _sync(repo, storage_emulator, "--delete", "--deployment", "test") == 0
    assert {CONFIG, COMPILED} & set(_objects(storage_emulator)) == set()


def test_a_compiled_form_without_its_config_is_not_synced(tmp_path):
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "gce_vm_backup.compiled.json").write_text("{}\n")
    (tmp_path / "dags" / "gce_vm_backup_prod.yaml").write_text(VALID_CONFIG)
    (tmp_path / "dags" / "gce_vm_backup_prod.compiled.json").write_text("{}\n")
    tree = scan_local(tmp_path)
    assert [f.object_name for f in tree.files] == [
        "dags/gce_vm_backup_prod.compiled.json",
        "dags/gce_vm_backup_prod.yaml",
    ]
    assert tree.excluded == set()


def test_compiled_forms_go_up_after_the_dag_files_and_before_the_configs(tmp_path):
    names = ["dags/gce_vm_backup.yaml", COMPILED, "dags/gce_vm_backup_dags.py", "plugins/x.py"]
    assert sorted(names, key=upload_rank) == [
        "plugins/x.py",
        "dags/gce_vm_backup_dags.py",
        COMPILED,
        "dags/gce_vm_backup.yaml",
    ]
    assert compiled_path(tmp_path / "dags/gce_vm_backup.yaml") == tmp_path / COMPILED
