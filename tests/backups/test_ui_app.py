"""The "VM backups" UI page: the plugin's FastAPI app mounted in Airflow's own API server app (TestClient),
authenticated by Airflow's get_user, per group authorized by the auth manager, against the emulator."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gce_vm_backup.ui.app import build_view, run_points

from ..conftest import migrate_airflow_db
from .conftest import PROJECT, RUNS, ZONE, vm_path

pytestmark = [pytest.mark.emulator, pytest.mark.airflow]


def _report(run: Any, rows: list[dict[str, Any]], run_id: str | None = None) -> dict[str, Any]:
    return {
        "dag_id": run.dag_id,
        "run_id": run_id or run.run_id,
        "generated_at": "2026-11-01T00:00:00+00:00",
        "vms": rows,
        "summary": {},
    }


WEB_1 = [r for r in RUNS if r.instance == "web-1" and r.deployment == "test" and r.labelled]
(UNLABELLED,) = [r for r in RUNS if r.instance == "web-1" and not r.labelled]
HOSTILE_RUN = '<script>alert("run")</script>'


def fake_reports() -> dict[str, list[dict[str, Any]]]:
    """Run reports as the backup DAG pushes them: the newest with downtime_s (b-report's key), the next in
    today's form (downtime_seconds only), the oldest with neither; one with a hostile run id."""
    newest, failed, oldest = WEB_1
    return {
        "gce_vm_backup__web": [
            _report(
                newest, [{"vm": vm_path("web-1"), "downtime_s": 42.5, "downtime_seconds": 40, "ok": True}]
            ),
            _report(failed, [{"vm": vm_path("web-1"), "downtime_seconds": 95, "ok": False}]),
            _report(oldest, [{"vm": vm_path("web-1"), "ok": True}]),
            # a run from before the run label: matched to its set by the snapshot names
            _report(
                UNLABELLED,
                [
                    {
                        "vm": vm_path("web-1"),
                        "downtime_s": 5,
                        "ok": True,
                        "snapshots": [
                            {"snapshot": n, "storage_bytes": 1} for n in UNLABELLED.snapshot_names().values()
                        ],
                    }
                ],
            ),
            _report(newest, [{"vm": vm_path("web-2"), "downtime_s": 7, "ok": True}], run_id=HOSTILE_RUN),
            _report(newest, [{"vm": "projects/x/zones/y/instances/not-ours", "downtime_s": 1}]),
        ]
    }


@pytest.fixture(scope="module")
def airflow_app(tmp_path_factory):
    """Airflow's API server app (core), with the plugins folder's plugins mounted, and the auth manager."""
    migrate_airflow_db()
    from airflow import plugins_manager
    from airflow.api_fastapi.app import create_app, get_auth_manager

    for cached in ("_get_plugins", "get_fastapi_plugins", "_get_ui_plugins"):  # Airflow 3.2+ caches
        getattr(getattr(plugins_manager, cached, None), "cache_clear", lambda: None)()
    app = create_app(apps="core")
    return app, get_auth_manager()


@pytest.fixture
def client(airflow_app, fleet, config_file):
    from fastapi.testclient import TestClient

    app, _ = airflow_app
    (mount,) = [route for route in app.routes if getattr(route, "path", "") == "/gce-vm-backup"]
    lazy = mount.app
    client = TestClient(app)
    client.get("/gce-vm-backup/backups")  # builds the plugin's app on its first request
    state = lazy._app.state
    reports = fake_reports()
    saved = (state.config_path, state.reports_reader)
    state.config_path, state.reports_reader = config_file, lambda dag_id: reports.get(dag_id, [])
    try:
        yield client
    finally:
        state.config_path, state.reports_reader = saved


def token(airflow_app, role: str | None) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    _, auth_manager = airflow_app
    return str(auth_manager.generate_jwt(SimpleAuthManagerUser(username="someone", role=role)))


def test_the_plugin_mounts_the_page_and_adds_it_to_the_ui_navigation(airflow_app):
    from gce_vm_backup_ui_plugin import GceVmBackupUiPlugin

    app, _ = airflow_app
    assert [route.path for route in app.routes if getattr(route, "path", "").startswith("/gce-vm")] == [
        "/gce-vm-backup"
    ]

    (view,) = GceVmBackupUiPlugin.external_views
    assert view["href"] == "gce-vm-backup/backups"  # relative: the UI may be served under a base path
    assert view["url_route"] == "vm-backups"


def test_an_anonymous_request_is_refused_and_a_forged_token_too(client, fleet):
    assert client.get("/gce-vm-backup/backups").status_code == 401
    assert client.get("/gce-vm-backup/backups.json").status_code == 401
    forged = client.get("/gce-vm-backup/backups", headers={"Authorization": "Bearer not-a-jwt"})
    assert forged.status_code == 403
    assert fleet.calls_for("compute.snapshots.list") == []  # nothing was listed for them


def test_the_page_shows_each_vm_its_sets_its_age_the_stale_flag_and_a_chart(client, airflow_app):
    response = client.get("/gce-vm-backup/backups", cookies={"_token": token(airflow_app, "viewer")})

    assert response.status_code == 200
    page = response.text
    rows = dict(re.findall(r'<tr class="vm" data-vm="([^"]+)" data-stale="(true|false)">', page))
    assert rows == {
        vm_path("web-1"): "false",
        vm_path("web-2"): "true",
        vm_path("web-3"): "true",
        vm_path("batch-1"): "false",
    }
    web_1 = page.split(f'data-vm="{vm_path("web-1")}" data-stale')[1].split("</tr>")[0]
    assert "<b>FAILED</b>" in web_1
    assert web_1.count("<li data-run=") == 4
    chart = re.search(r'<svg class="chart" data-vm="[^"]+web-1".*?</svg>', web_1).group(0)
    assert chart.count('class="downtime"') == 3  # the run without any downtime key has no bar
    assert chart.count('class="size"') == 4
    assert "downtime 42 s" in chart or "downtime 43 s" in chart  # downtime_s wins over downtime_seconds
    assert "downtime 95 s" in chart  # today's key, when downtime_s is absent
    assert ": 2 stale VM(s). " in page
    # the hostile run id is text, never markup
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;run&quot;)&lt;/script&gt;" in page


def test_the_json_has_each_vms_runs_oldest_first_with_downtime_and_size(client, airflow_app):
    response = client.get(
        "/gce-vm-backup/backups.json", headers={"Authorization": f"Bearer {token(airflow_app, 'admin')}"}
    )

    assert response.status_code == 200
    groups = response.json()["groups"]
    (web_1,) = [vm for vm in groups["web"]["vms"] if vm["vm"] == vm_path("web-1")]
    runs = web_1["runs"]
    assert [r["downtime_s"] for r in runs] == [5, None, 95, 42.5]  # stamp set, oldest report, ..., newest
    assert [r["storage_bytes"] for r in runs] == [12 << 30, 20 << 30, 3 << 30, 23 << 30]
    assert [r["ok"] for r in runs] == [True, True, False, True]
    assert runs[0]["run_id"] == UNLABELLED.run_id
    assert runs[-1]["run"] == WEB_1[0].label()
    assert groups["batch"]["vms"][0]["runs"][0]["downtime_s"] is None


def test_a_user_who_may_not_read_the_backup_dags_sees_no_group_and_nothing_is_listed(
    client, airflow_app, fleet
):
    response = client.get("/gce-vm-backup/backups", cookies={"_token": token(airflow_app, None)})

    assert response.status_code == 200
    assert "2 group(s) hidden: you may not read their backup DAG." in response.text
    assert 'class="vm"' not in response.text
    assert fleet.calls_for("compute.snapshots.list") == []


def test_a_group_whose_listing_fails_says_so_and_the_others_still_show(client, airflow_app, fleet):
    fleet.faults.http_error(
        "compute.snapshots.list", 403, times=1, message="Required 'compute.snapshots.list'"
    )

    response = client.get("/gce-vm-backup/backups.json", cookies={"_token": token(airflow_app, "admin")})

    groups = response.json()["groups"]
    assert groups["web"]["error"].startswith("list snapshots of group web failed: HTTP 403")
    assert groups["web"]["vms"] == []
    assert [vm["vm"] for vm in groups["batch"]["vms"]] == [vm_path("batch-1")]


def test_a_broken_config_is_shown_not_a_server_error(tmp_path, fleet):
    broken = tmp_path / "gce_vm_backup.yaml"
    broken.write_text("version: 1\ndeployment: test\ngroups: {}\n")

    view = build_view(
        None,
        config_path=broken,
        hook_factory=lambda conn: pytest.fail("no listing without a valid group"),
        reports_reader=lambda dag_id: [],
        is_authorized=lambda user, dag_id: True,
    )
    assert view.groups == []
    assert view.problems == [f"{broken}: key 'groups': must be a non-empty mapping of group id to group"]


def test_a_report_of_a_run_without_snapshots_still_has_its_point():
    from datetime import UTC, datetime

    from gce_vm_backup.report.freshness import VmBackups

    vm = VmBackups(
        group="web",
        vm=f"projects/{PROJECT}/zones/{ZONE}/instances/web-1",
        in_config=True,
        sets=(),
        checked_at=datetime.now(UTC),
        period=None,
        stale_before=None,
    )
    report = {
        "dag_id": "gce_vm_backup__web",
        "run_id": "manual__1",
        "generated_at": "2026-11-30T03:10:00+00:00",
        "vms": [{"vm": vm.vm, "downtime_s": 12, "ok": False, "snapshots": [{"storage_bytes": 0}]}],
    }
    ((point,),) = run_points([vm], [report], dag_id="gce_vm_backup__web").values()
    assert (point.run_id, point.downtime_s, point.storage_bytes, point.ok) == ("manual__1", 12.0, None, False)


@pytest.mark.slow
def test_the_run_reports_of_a_real_backup_run_are_read_from_the_database_and_charted(monkeypatch, tmp_path):
    """A backup run under dag.test against the emulator: its run report, read back from Airflow's database
    as the page reads it, gives the VM's downtime, and its point carries the run's snapshot size."""
    from gce_emulator import Emulator
    from gce_vm_backup.compute.hook import ComputeBackupHook
    from gce_vm_backup.ui.app import read_run_reports

    from .conftest import CONFIG, SEED, dagbag_of

    fast = CONFIG.replace("defaults:\n", "defaults:\n  poke_interval: 1\n  retries: 0\n")
    with Emulator(SEED, time_scale=60) as emulator:
        monkeypatch.setenv("GCE_VM_BACKUP_COMPUTE_ENDPOINT", emulator.url)
        monkeypatch.delenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", raising=False)
        run = (
            dagbag_of("ui_reports", fast)
            .get_dag("gce_vm_backup__batch")
            .test(run_conf={"vms": [], "dry_run": False})
        )
        assert run.state == "success"

        reports = read_run_reports("gce_vm_backup__batch")
        config = tmp_path / "gce_vm_backup.yaml"
        config.write_text(fast)
        view = build_view(
            None,
            config_path=config,
            hook_factory=lambda conn: ComputeBackupHook(gcp_conn_id=conn),
            reports_reader=read_run_reports,
            is_authorized=lambda user, dag_id: dag_id == "gce_vm_backup__batch",
        )

    (report,) = [r for r in reports if r["run_id"] == run.run_id]
    (row,) = report["vms"]
    assert row["vm"] == vm_path("batch-1")
    (group,) = view.groups
    (point,) = group.runs[vm_path("batch-1")]  # the one set of this run, with its report's downtime
    assert point.run_id == run.run_id
    assert point.downtime_s == row.get("downtime_s", row.get("downtime_seconds"))
    assert point.downtime_s is not None
    assert point.storage_bytes == sum(s["storage_bytes"] for s in row["snapshots"]) > 0
    assert view.hidden_groups == 1


def _restore_links(page: str) -> list[str]:
    import html

    return [html.unescape(href) for href in re.findall(r'<a class="restore" href="([^"]+)"', page)]


def test_a_restore_link_opens_the_groups_restore_form_with_the_vm_and_the_set_filled_in(
    client, airflow_app, config_file
):
    from urllib.parse import parse_qs, urlsplit

    from gce_vm_backup.config.models import read_config
    from gce_vm_backup.dags.restore import restore_params
    from gce_vm_backup.ui.app import form_vm

    cookies = {"_token": token(airflow_app, "viewer")}
    page = client.get("/gce-vm-backup/backups", cookies=cookies).text
    web_1 = page.split(f'data-vm="{vm_path("web-1")}" data-stale')[1].split("</tr>")[0]
    newest_link, *set_links = _restore_links(web_1)
    assert len(set_links) == 3  # the READY sets of web-1; its FAILED set has none
    newest = WEB_1[0].label()
    assert parse_qs(urlsplit(newest_link).query) == {
        "group": ["web"],
        "vm": [vm_path("web-1")],
        "snapshot_set": [newest],
    }

    response = client.get(f"/gce-vm-backup/{newest_link}", cookies=cookies)

    assert response.status_code == 200
    form = response.text
    config, _ = read_config(config_file)
    params = restore_params("web", config.groups["web"])
    assert re.findall(r'<div class="field" id="element_([a-z_]+)">', form) == list(params)
    vm_value = form_vm(vm_path("web-1"), params["vm"].schema)
    vm_field = form.split('id="element_vm"')[1].split("</div>")[0]
    filled = re.findall(r'<option value="([^"]+)" selected>', vm_field) or re.findall(
        r'value="([^"]+)"', vm_field
    )
    assert filled == [vm_value]
    assert vm_value in (vm_path("web-1"), f"{ZONE}/web-1")
    assert f'id="field-snapshot_set" name="snapshot_set" data-kind="nullable" value="{newest}"' in form
    assert 'data-api="../api/v2/dags/gce_vm_backup_restore__web/dagRuns"' in form


def test_the_restore_form_of_an_unknown_or_unreadable_group_is_not_served(client, airflow_app):
    query = f"group=web&vm={vm_path('web-1')}&snapshot_set=x"
    assert client.get(f"/gce-vm-backup/restore?{query}").status_code == 401
    for role, group in ((None, "web"), ("admin", "nope")):
        response = client.get(
            f"/gce-vm-backup/restore?{query.replace('group=web', f'group={group}')}",
            cookies={"_token": token(airflow_app, role)},
        )
        assert response.status_code == 404
        assert f"No group &#x27;{group}&#x27; on this page for you." in response.text
        assert 'class="field"' not in response.text
