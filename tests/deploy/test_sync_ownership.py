"""`vm-backup sync`: what a deployment owns, what `--delete` may remove, symlinks and upload order.

Against gcp-storage-emulator through the real google-cloud-storage client.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from google.cloud import storage

from vm_backup_cli.__main__ import main
from vm_backup_cli.sync_plan import MANAGED_METADATA_KEY, md5_base64

from .conftest import VALID_CONFIG, write_tree
from .test_sync import EXPECTED, _objects, _sync

HOOK = "plugins/operators/gce_vm_backup/compute/hook.py"
SEED = "plugins/operators/gce_vm_backup/data/seed.json"
CONFIG = "dags/gce_vm_backup.yaml"
COMPILED = "dags/gce_vm_backup.compiled.json"  # the config's compiled form, written by sync


def _bucket(name: str) -> storage.Bucket:
    return storage.Client(project="test").bucket(name)


def _manifest(bucket: str, deployment: str) -> dict:
    return json.loads(_bucket(bucket).blob(f"gce-vm-backup-sync/{deployment}.json").download_as_bytes())


@pytest.fixture
def other_team(tmp_path: Path) -> Path:
    """Another team's checkout of the same tool: its own deployment, DAG folder and config, and the same
    plugin package (identical hook.py)."""
    return write_tree(
        tmp_path / "other",
        {
            "dags/team_b/gce_vm_backup_dags.py": "# team b's thin DAG file\n",
            "dags/team_b/gce_vm_backup.yaml": VALID_CONFIG.replace("deployment: test", "deployment: team-b"),
            "plugins/operators/gce_vm_backup/__init__.py": '"""pkg"""\n',
            "plugins/operators/gce_vm_backup/compute/hook.py": "X = 1\n",
        },
    )


# ---- ownership per deployment ----------------------------------------------------------------------
def test_manifest_lists_exactly_what_the_deployment_uploaded(storage_emulator, repo):
    assert _sync(repo, storage_emulator) == 0
    manifest = _manifest(storage_emulator, "test")
    assert manifest["deployment"] == "test"
    assert manifest["objects"] == {name: md5_base64(repo / name) for name in EXPECTED}


@pytest.mark.parametrize("they_synced_first", [True, False], ids=["they-first", "we-first"])
def test_delete_keeps_what_another_deployment_uploaded_with_the_same_tool(
    storage_emulator, repo, other_team, they_synced_first
):
    # they-first: hook.py carries their marker; we-first: ours, and only their manifest protects it.
    for source in (other_team, repo) if they_synced_first else (repo, other_team):
        assert _sync(source, storage_emulator) == 0
    theirs = _objects(storage_emulator)
    (repo / HOOK).unlink()  # we no longer ship hook.py; team b still does (same content)
    (repo / "dags/gce_vm_backup_dags.py").unlink()

    assert _sync(repo, storage_emulator, "--delete") == 0

    objects = _objects(storage_emulator)
    for name in ("dags/team_b/gce_vm_backup_dags.py", "dags/team_b/gce_vm_backup.yaml", HOOK):
        assert objects[name] == theirs[name]
    assert "dags/gce_vm_backup_dags.py" not in objects
    assert HOOK not in _manifest(storage_emulator, "test")["objects"]
    assert HOOK in _manifest(storage_emulator, "team-b")["objects"]


def test_replacing_another_deployments_copy_is_said_in_the_output(storage_emulator, repo, other_team, capsys):
    (other_team / HOOK).write_text("X = 'team b'\n")
    assert _sync(other_team, storage_emulator) == 0
    capsys.readouterr()
    assert _sync(repo, storage_emulator) == 0
    assert f"upload gs://{storage_emulator}/{HOOK} (replaces the copy deployment 'team-b' uploaded)" in (
        capsys.readouterr().out
    )


def test_delete_with_a_source_of_only_dags_keeps_our_plugins(storage_emulator, repo, tmp_path, capsys):
    assert _sync(repo, storage_emulator) == 0
    dags_only = tmp_path / "dags-only"
    shutil.copytree(repo / "dags", dags_only / "dags")
    shutil.copy(repo / ".vmbackupignore", dags_only)
    (dags_only / "dags/gce_vm_backup_dags.py").write_text("# v2\n")
    capsys.readouterr()

    assert _sync(dags_only, storage_emulator, "--delete") == 0

    assert set(_objects(storage_emulator)) == EXPECTED
    out = capsys.readouterr().out
    assert (
        f"kept    gs://{storage_emulator}/plugins/ (3 object(s) of ours; --source has no file in plugins/"
        in out
    )
    # still ours: a later full sync without hook.py deletes it
    assert HOOK in _manifest(storage_emulator, "test")["objects"]
    (repo / HOOK).unlink()
    assert _sync(repo, storage_emulator, "--delete") == 0
    assert HOOK not in _objects(storage_emulator)


@pytest.mark.parametrize("emptied", ["empty", "wholly-excluded"])
def test_delete_with_an_empty_plugins_folder_keeps_our_plugins(storage_emulator, repo, emptied):
    assert _sync(repo, storage_emulator) == 0
    if emptied == "empty":
        shutil.rmtree(repo / "plugins")
        (repo / "plugins").mkdir()
    else:
        (repo / ".vmbackupignore").write_text("scratch/\nplugins/\n")
    assert _sync(repo, storage_emulator, "--delete") == 0
    assert set(_objects(storage_emulator)) == EXPECTED


def test_a_new_ignore_line_does_not_delete_what_it_now_excludes(storage_emulator, repo, capsys):
    assert _sync(repo, storage_emulator) == 0
    (repo / ".vmbackupignore").write_text("scratch/\n*.json\n")
    capsys.readouterr()

    assert _sync(repo, storage_emulator, "--delete") == 0

    assert SEED in _objects(storage_emulator)
    assert "excluded by .vmbackupignore; --delete-excluded removes it" in capsys.readouterr().out
    assert _sync(repo, storage_emulator, "--delete", "--delete-excluded") == 0
    assert SEED not in _objects(storage_emulator)
    assert SEED not in _manifest(storage_emulator, "test")["objects"]


def test_an_excluded_file_that_is_also_gone_locally_is_deleted(storage_emulator, repo):
    assert _sync(repo, storage_emulator) == 0
    (repo / ".vmbackupignore").write_text("scratch/\n*.json\n")
    (repo / SEED).unlink()
    assert _sync(repo, storage_emulator, "--delete") == 0
    assert SEED not in _objects(storage_emulator)


def test_an_object_replaced_since_our_upload_is_not_ours_to_delete(storage_emulator, repo, capsys):
    assert _sync(repo, storage_emulator) == 0
    _bucket(storage_emulator).blob(HOOK).upload_from_string(b"# patched by hand in the bucket\n")
    (repo / HOOK).unlink()
    capsys.readouterr()

    assert _sync(repo, storage_emulator, "--delete") == 0

    assert _objects(storage_emulator)[HOOK] == b"# patched by hand in the bucket\n"
    assert "replaced since this deployment uploaded it" in capsys.readouterr().out


def test_objects_of_earlier_versions_without_a_manifest_are_never_deleted(storage_emulator, repo, capsys):
    legacy = _bucket(storage_emulator).blob("dags/legacy_dag.py")
    legacy.metadata = {MANAGED_METADATA_KEY: "true"}  # the constant marker of earlier versions
    legacy.upload_from_string(b"# uploaded by an earlier vm-backup sync\n")

    assert _sync(repo, storage_emulator, "--delete") == 0

    assert "dags/legacy_dag.py" in _objects(storage_emulator)
    assert "no manifest of deployment 'test'" in capsys.readouterr().out


def test_without_delete_a_stale_object_stays_ours_for_a_later_delete(storage_emulator, repo):
    assert _sync(repo, storage_emulator) == 0
    (repo / HOOK).unlink()
    assert _sync(repo, storage_emulator) == 0
    assert HOOK in _objects(storage_emulator)
    assert _sync(repo, storage_emulator, "--delete") == 0
    assert HOOK not in _objects(storage_emulator)


def test_deployment_env_var_overrides_the_config_as_at_parse_time(storage_emulator, repo, monkeypatch):
    monkeypatch.setenv("GCE_VM_BACKUP_DEPLOYMENT", "staging")
    assert _sync(repo, storage_emulator) == 0
    blob = _bucket(storage_emulator).get_blob(CONFIG)
    assert blob.metadata == {MANAGED_METADATA_KEY: "staging"}
    assert set(_manifest(storage_emulator, "staging")["objects"]) == EXPECTED


def test_a_source_without_config_needs_the_deployment_argument(storage_emulator, repo, capsys):
    shutil.rmtree(repo / "dags")
    with pytest.raises(SystemExit) as exit_info:
        _sync(repo, storage_emulator)
    assert exit_info.value.code == 2
    assert "--deployment is needed" in capsys.readouterr().err
    assert _sync(repo, storage_emulator, "--deployment", "test") == 0
    assert HOOK in _manifest(storage_emulator, "test")["objects"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--deployment", "prod"], "--deployment: 'prod' differs from the config's deployment 'test'"),
        (["--deployment", "Prod!"], "--deployment: 'Prod!' is not a deployment id"),
        (["--delete-excluded"], "--delete-excluded goes with --delete"),
    ],
)
def test_deployment_usage_errors_exit_2_naming_the_argument(repo, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sync", "--bucket", "some-bucket", "--source", str(repo), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_configs_naming_two_deployments_are_refused(repo, capsys):
    write_tree(repo, {"dags/other/gce_vm_backup.yaml": VALID_CONFIG.replace("test", "other")})
    with pytest.raises(SystemExit):
        main(["sync", "--bucket", "some-bucket", "--source", str(repo)])
    assert "the backup configs name different deployments" in capsys.readouterr().err


def test_an_unreadable_manifest_stops_the_sync_naming_it(storage_emulator, repo, capsys):
    _bucket(storage_emulator).blob("gce-vm-backup-sync/test.json").upload_from_string(b"{not json")
    assert _sync(repo, storage_emulator, "--delete") == 1
    err = capsys.readouterr().err
    assert f"gs://{storage_emulator}/gce-vm-backup-sync/test.json: not JSON" in err
    assert _objects(storage_emulator) == {}


# ---- symlinks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("link", "target", "message"),
    [
        (
            "dags/creds.json",
            "{outside}/secret.json",
            "dags/creds.json: a symlink to {outside}/secret.json, outside",
        ),
        ("dags/config", "{outside}", "dags/config: a symlink to {outside}, outside"),
        ("dags/readme.md", "../README.md", "dags/readme.md: a symlink to {repo}/README.md, outside"),
        ("dags/notes.txt", "scratch/notes.txt", "a symlink to dags/scratch/notes.txt, which is excluded"),
        (
            "dags/gone.py",
            "{outside}/nope.py",
            "dags/gone.py: a symlink to {outside}/nope.py, which does not exist",
        ),
        ("dags/pkg", "../plugins/operators", "a symlink to the folder plugins/operators"),
    ],
)
def test_a_symlink_to_anything_sync_does_not_upload_is_refused(
    storage_emulator, repo, tmp_path, capsys, link, target, message
):
    outside = tmp_path / "outside"
    (outside / "secret.json").parent.mkdir(parents=True)
    (outside / "secret.json").write_text('{"private_key": "..."}\n')
    os.symlink(target.format(outside=outside), repo / link)

    assert _sync(repo, storage_emulator) == 1

    err = capsys.readouterr().err
    assert message.format(outside=outside, repo=repo) in err
    assert "Nothing was uploaded" in err
    assert _objects(storage_emulator) == {}


def test_a_symlink_to_a_synced_file_is_uploaded_with_its_content(storage_emulator, repo):
    os.symlink("../plugins/operators/gce_vm_backup/compute/hook.py", repo / "dags/hook_copy.py")
    assert _sync(repo, storage_emulator) == 0
    assert _objects(storage_emulator)["dags/hook_copy.py"] == b"X = 1\n"


def test_an_excluded_symlink_out_of_the_tree_is_skipped(storage_emulator, repo, tmp_path):
    (tmp_path / "secret.json").write_text("{}")
    os.symlink(tmp_path / "secret.json", repo / "dags/scratch/creds.json")  # scratch/ is ignored
    assert _sync(repo, storage_emulator) == 0
    assert set(_objects(storage_emulator)) == EXPECTED


# ---- order -------------------------------------------------------------------------------------------
@pytest.fixture
def uploads(monkeypatch) -> list[str]:
    """The object names the sync uploads, in the order the uploads were made."""
    made: list[str] = []
    original = storage.Blob.upload_from_filename

    def recording(self, *args, **kwargs):
        made.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(storage.Blob, "upload_from_filename", recording)
    return made


def test_plugins_go_up_before_dags_and_the_config_last(storage_emulator, repo, uploads):
    assert _sync(repo, storage_emulator) == 0
    folders = [name.split("/", 1)[0] for name in uploads]
    assert folders == sorted(folders, key=["plugins", "dags"].index)
    assert uploads[-1] == CONFIG


def test_changed_plugin_and_config_upload_plugin_first(storage_emulator, repo, uploads):
    assert _sync(repo, storage_emulator) == 0
    uploads.clear()
    (repo / HOOK).write_text("X = 2\n")
    (repo / CONFIG).write_text(VALID_CONFIG.replace("@daily", "@weekly"))
    (repo / "dags/aaa_first_by_name.py").write_text("# sorts before the config\n")
    assert _sync(repo, storage_emulator) == 0
    assert uploads == [HOOK, "dags/aaa_first_by_name.py", COMPILED, CONFIG]


def test_a_failed_plugin_upload_leaves_the_old_config_in_place(storage_emulator, repo, monkeypatch, capsys):
    from google.api_core.exceptions import ServiceUnavailable

    assert _sync(repo, storage_emulator) == 0
    (repo / HOOK).write_text("X = 2\n")
    (repo / CONFIG).write_text(VALID_CONFIG.replace("@daily", "@weekly"))
    original = storage.Blob.upload_from_filename

    def failing(self, *args, **kwargs):
        if self.name == HOOK:
            raise ServiceUnavailable("injected")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(storage.Blob, "upload_from_filename", failing)
    assert _sync(repo, storage_emulator) == 1
    assert _objects(storage_emulator)[CONFIG] == VALID_CONFIG.encode()
    assert "injected" in capsys.readouterr().err


def test_deletes_come_after_every_upload(storage_emulator, repo, capsys):
    assert _sync(repo, storage_emulator) == 0
    (repo / SEED).unlink()
    (repo / HOOK).write_text("X = 2\n")
    capsys.readouterr()
    assert _sync(repo, storage_emulator, "--delete") == 0
    steps = [
        line.split()[0:2]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(("upload", "delete"))
    ]
    assert steps == [
        ["upload", f"gs://{storage_emulator}/{HOOK}"],
        ["delete", f"gs://{storage_emulator}/{SEED}"],
    ]
