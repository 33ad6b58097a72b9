"""The FastAPI app of the "VM backups" page in the Airflow UI (Airflow 3.1+ plugin, see
plugins/gce_vm_backup_ui_plugin.py, which mounts it at ``/gce-vm-backup``).

``GET /backups`` (HTML) and ``GET /backups.json``: the same view as ``vm-backup backups`` (per VM of each
group: its snapshot sets, the age of its newest READY set, the stale flag; ``freshness.collect_group``)
plus, per VM, each run's downtime and snapshot size, drawn as an inline SVG chart. Downtime comes from the
backup DAG's run reports (the ``run_report`` task's XCom ``run_report``: per VM row ``downtime_s`` when
present, else ``downtime_seconds``), read from Airflow's metadata database; sizes from the snapshots
(``storageBytes``), matched to runs by the run label (``labels.run_label(dag_id, run_id)``) or, for sets
made before that label, by the snapshot names in the report. ``GET /restore?group=&vm=&snapshot_set=``
(where each set's "Restore..." link leads): the group's restore DAG's params as a form, the VM and the set
filled in; it triggers the restore DAG through Airflow's REST API with the user's own session.

Authentication: Airflow does not authenticate plugin apps; every route depends on Airflow's own
``get_user`` (the UI's session cookie or a bearer token from ``POST /auth/token``), so an anonymous
request gets 401 and a bad token 403, as on ``/api/v2``. Authorization: a group is shown only to a user
the auth manager lets read its backup DAG's XComs (``is_authorized_dag(GET, XCOM)``). The snapshots are
listed with the group's connection from the API server (on Composer: the environment's service account,
which the backup role already lets list snapshots and instances).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from gce_vm_backup.config.labels import run_label
from gce_vm_backup.report.freshness import VmBackups, collect_group, set_time
from gce_vm_backup.ui.view import FormField, GroupView, PageView, RestoreForm, RunPoint

log = logging.getLogger(__name__)
REPORT_TASK_ID = "run_report"  # report.REPORT_TASK_ID and REPORT_XCOM_KEY (not imported: that pulls in
REPORT_XCOM_KEY = "run_report"  # the operators, which the API server does not need)
RUNS_CHARTED = 20
URL_PREFIX = "/gce-vm-backup"


# ---- where the data comes from (replaceable in tests through app.state) -------------------------
def default_config_path() -> Path:
    """The config the DAG file reads: GCE_VM_BACKUP_CONFIG, else gce_vm_backup.yaml in the DAGs folder."""
    from airflow.configuration import conf

    from gce_vm_backup.dags.backup import default_config_path as beside_dag_file

    return beside_dag_file(Path(conf.get("core", "dags_folder")) / "gce_vm_backup_dags.py")


def default_hook(gcp_conn_id: str) -> Any:
    from gce_vm_backup.compute.hook import ComputeBackupHook

    return ComputeBackupHook(gcp_conn_id=gcp_conn_id)


def read_run_reports(dag_id: str, limit: int = RUNS_CHARTED) -> list[Mapping[str, Any]]:
    """The latest ``limit`` run reports of the DAG, newest first, from the metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(XComModel)
            .filter(
                XComModel.dag_id == dag_id,
                XComModel.task_id == REPORT_TASK_ID,
                XComModel.key == REPORT_XCOM_KEY,
                XComModel.map_index == -1,
            )
            .order_by(XComModel.timestamp.desc())
            .limit(limit)
            .all()
        )
        values = [XComModel.deserialize_value(row) for row in rows]
    return [value for value in values if isinstance(value, Mapping) and isinstance(value.get("vms"), list)]


def authorized(user: Any, dag_id: str) -> bool:
    """Whether the auth manager lets the user read the DAG's XComs (what the page shows of it)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return bool(
        get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.XCOM, details=DagDetails(id=dag_id), user=user
        )
    )


# ---- the view ------------------------------------------------------------------------------------
def _downtime(row: Mapping[str, Any]) -> float | None:
    value = row.get("downtime_s", row.get("downtime_seconds"))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def run_points(
    vms: Sequence[VmBackups], reports: Iterable[Mapping[str, Any]], *, dag_id: str, limit: int = RUNS_CHARTED
) -> dict[str, list[RunPoint]]:
    """Per VM, its runs oldest first (at most ``limit``): each set's size and time, and each report row's
    downtime. A report without a set (the run made no snapshot) still has its point; a set without a
    report (the report was cleared, or older than the reports read) still has its size."""
    points: dict[str, dict[str, RunPoint]] = {vm.vm: {} for vm in vms}
    set_of_snapshot: dict[str, str] = {}  # snapshot name -> its set's run (sets without the run label)
    for vm in vms:
        for snapshot_set in vm.sets:
            points[vm.vm][snapshot_set.run] = RunPoint(
                run=snapshot_set.run, at=set_time(snapshot_set), storage_bytes=snapshot_set.storage_bytes
            )
            set_of_snapshot.update((s.name, snapshot_set.run) for s in snapshot_set.snapshots)
    for report in reports:
        run_id = str(report.get("run_id") or "")
        label = run_label(str(report.get("dag_id") or dag_id), run_id)
        generated = _time(report.get("generated_at"))
        for row in report.get("vms") or []:
            if not isinstance(row, Mapping) or row.get("vm") not in points:
                continue
            key = label
            if key not in points[row["vm"]]:  # a set made before the run label: by its snapshots' names
                named = [set_of_snapshot.get(str(s.get("snapshot"))) for s in row.get("snapshots") or []]
                key = next((run for run in named if run in points[row["vm"]]), label)
            known = points[row["vm"]].get(key)
            size = known.storage_bytes if known else None
            if size is None:
                size = sum(int(s.get("storage_bytes") or 0) for s in row.get("snapshots") or []) or None
            points[row["vm"]][key] = RunPoint(
                run=key,
                at=known.at if known else generated,
                run_id=run_id,
                downtime_s=_downtime(row),
                storage_bytes=size,
                ok=bool(row.get("ok")),
            )
    return {vm: sorted(by_run.values(), key=lambda p: p.at)[-limit:] for vm, by_run in points.items()}


def _time(value: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build_view(
    user: Any,
    *,
    config_path: Path,
    hook_factory: Callable[[str], Any],
    reports_reader: Callable[[str], list[Mapping[str, Any]]],
    is_authorized: Callable[[Any, str], bool],
    now: datetime | None = None,
) -> PageView:
    """Everything the page shows. Raises nothing for a bad config or a failed listing: both are shown."""
    from gce_vm_backup.config.models import read_config
    from gce_vm_backup.dags.backup import dag_id_for

    now = now or datetime.now(UTC)
    config, problems = read_config(config_path)
    view = PageView(config.deployment, now, [], [str(p) for p in problems])
    for gid, group in config.groups.items():
        dag_id = dag_id_for(gid)
        if not is_authorized(user, dag_id):
            view.hidden_groups += 1
            continue
        shown = GroupView(gid, dag_id, group.schedule)
        view.groups.append(shown)
        try:
            shown.vms = collect_group(
                hook_factory(group.gcp_conn_id), gid, group, deployment=config.deployment, now=now
            )
            shown.runs = run_points(shown.vms, reports_reader(dag_id), dag_id=dag_id)
        except Exception as exc:  # one group's failure must not blank the page: shown in its place
            log.warning("VM backups page: group %s: %s", gid, exc)
            shown.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return view


VM_PATH = re.compile(r"^projects/[^/]+/zones/(?P<zone>[^/]+)/instances/(?P<instance>[^/]+)$")


def form_vm(vm: str, schema: Mapping[str, Any]) -> str:
    """The restore form's value for the VM at path ``vm``: the path itself (the form takes it), or, where
    the form offers a closed list, the entry of the list naming that VM (``zone/instance`` or
    ``instance``); the path when none does (the trigger is then refused, naming the list)."""
    choices = schema.get("enum")
    match = VM_PATH.match(vm)
    if not isinstance(choices, list) or match is None:
        return vm
    candidates = (vm, f"{match['zone']}/{match['instance']}", match["instance"])
    return next((c for c in candidates if c in choices), vm)


def restore_form(
    user: Any,
    *,
    config_path: Path,
    is_authorized: Callable[[Any, str], bool],
    group: str,
    vm: str,
    snapshot_set: str,
) -> RestoreForm:
    """The group's restore form (its restore DAG's params, at their defaults) with ``vm`` and
    ``snapshot_set`` filled in. An unknown group and a group whose backup DAG the user may not read get the
    same answer: the form says so and has no field."""
    from gce_vm_backup.config.models import read_config
    from gce_vm_backup.dags.backup import dag_id_for
    from gce_vm_backup.dags.restore import RESTORE_PREFIX, restore_params

    form = RestoreForm(group, f"{RESTORE_PREFIX}{group}", vm, snapshot_set)
    config, _ = read_config(config_path)
    chosen = config.groups.get(group)
    if chosen is None or not is_authorized(user, dag_id_for(group)):
        form.problem = f"No group {group!r} on this page for you."
        return form
    for name, param in restore_params(group, chosen).items():
        dumped = param.dump()  # value (None when unset), description, schema
        schema = dict(dumped.get("schema") or {})
        value = {"vm": form_vm(vm, schema), "snapshot_set": snapshot_set}.get(name, dumped.get("value"))
        form.fields.append(FormField(name, schema, value, dumped.get("description")))
    return form


def create_app() -> FastAPI:
    """The app the plugin mounts. ``app.state`` holds where the data comes from (tests replace it)."""
    from airflow.api_fastapi.core_api.security import get_user

    from gce_vm_backup.ui.page import render_page, render_restore_form, view_json

    app = FastAPI(title="gce-vm-backup", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config_path = None  # None: default_config_path() at each request
    app.state.hook_factory = default_hook
    app.state.reports_reader = read_run_reports
    app.state.is_authorized = authorized

    def view_for(request: Request, user: Any) -> PageView:
        state = request.app.state
        return build_view(
            user,
            config_path=state.config_path or default_config_path(),
            hook_factory=state.hook_factory,
            reports_reader=state.reports_reader,
            is_authorized=state.is_authorized,
        )

    # Depends(get_user), not the GetUserDep annotation: this module's annotations are strings
    # (``from __future__ import annotations``) and get_user is imported here, out of FastAPI's sight.
    # Plain `def` routes: FastAPI runs them in its thread pool, so the blocking list calls and database
    # reads do not hold the API server's event loop.
    @app.get("/backups", response_class=HTMLResponse)
    def backups_page(request: Request, user: Any = Depends(get_user)) -> HTMLResponse:  # noqa: B008
        return HTMLResponse(render_page(view_for(request, user)))

    @app.get("/backups.json")
    def backups_json(request: Request, user: Any = Depends(get_user)) -> JSONResponse:  # noqa: B008
        return JSONResponse(view_json(view_for(request, user)))

    @app.get("/restore", response_class=HTMLResponse)
    def restore_page(
        request: Request,
        group: str = "",
        vm: str = "",
        snapshot_set: str = "",
        user: Any = Depends(get_user),  # noqa: B008
    ) -> HTMLResponse:
        state = request.app.state
        form = restore_form(
            user,
            config_path=state.config_path or default_config_path(),
            is_authorized=state.is_authorized,
            group=group,
            vm=vm,
            snapshot_set=snapshot_set,
        )
        return HTMLResponse(render_restore_form(form), status_code=404 if form.problem else 200)

    return app
