"""The "VM backups" page's HTML without a server: set ids as text, the "Restore..." links (encoded and
escaped, whatever the VM name or set id), the restore form, and the charts' shared, labelled axes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

from gce_vm_backup.report.freshness import VmBackups
from gce_vm_backup.restore.sets import SetSnapshot, SnapshotSet
from gce_vm_backup.ui.app import form_vm
from gce_vm_backup.ui.page import (
    chart_svg,
    nice_ticks,
    page_scales,
    render_page,
    render_restore_form,
    restore_href,
)
from gce_vm_backup.ui.view import FormField, GroupView, PageView, RestoreForm, RunPoint

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
HOSTILE_VM = 'projects/p/zones/z/instances/a"b><script>alert(1)</script>&group=other#x'
HOSTILE_SET = "'\"><img src=x onerror=alert(2)>&vm=v%2F?#"


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside each element with a class."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str | None] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in ("input", "br", "line", "rect", "meta"):
            self._open.append(dict(attrs).get("class"))

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for cls in self._open:
            if cls:
                self.texts.setdefault(cls, []).append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def snapshot_set(run: str, vm: str, status: str = "READY", age: timedelta = timedelta(0)) -> SnapshotSet:
    return SnapshotSet(
        run=run,
        created_at=T0 - age,
        vm=vm,
        snapshots=(
            SetSnapshot(
                name=f"snap-{abs(hash(run))}",
                disk_source=f"{vm}-disk",
                status=status,
                created_at=T0 - age,
                storage_bytes=2 << 30,
            ),
        ),
    )


def vm_backups(vm: str, *sets: SnapshotSet) -> VmBackups:
    return VmBackups(
        group="web",
        vm=vm,
        in_config=True,
        sets=sets,
        checked_at=T0 + timedelta(hours=1),
        period=None,
        stale_before=None,
    )


def page_of(*vms: VmBackups, runs: dict[str, list[RunPoint]] | None = None, group: str = "web") -> str:
    shown = GroupView(group, f"gce_vm_backup__{group}", None, vms=list(vms), runs=runs or {})
    return render_page(PageView("test", T0, [shown]))


def test_each_set_id_is_visible_text_and_each_ready_set_has_a_restore_link() -> None:
    vm = "projects/p/zones/us-central1-a/instances/web-1"
    page = page_of(
        vm_backups(
            vm,
            snapshot_set("20261201030000", vm),
            snapshot_set("20261130030000", vm, status="FAILED", age=timedelta(days=1)),
            snapshot_set("20261129030000", vm, age=timedelta(days=2)),
        )
    )
    html = Elements(page)
    # the ids as text (selectable whole), newest first, and the newest READY one again beside its age
    assert html.texts["set-id"] == ["20261201030000", "20261201030000", "20261130030000", "20261129030000"]
    links = [
        (a["href"], text)
        for a, text in zip(html.find("a", **{"class": "restore"}), html.texts["restore"], strict=False)
    ]
    assert [text for _, text in links] == ["Restore newest...", "Restore...", "Restore..."]
    wanted = [parse_qs(urlsplit(href or "").query) for href, _ in links]
    assert wanted == [
        {"group": ["web"], "vm": [vm], "snapshot_set": ["20261201030000"]},
        {"group": ["web"], "vm": [vm], "snapshot_set": ["20261201030000"]},
        {"group": ["web"], "vm": [vm], "snapshot_set": ["20261129030000"]},  # not the FAILED set
    ]
    assert all(urlsplit(href or "").path == "restore" for href, _ in links)  # beside the page: any base path


def test_a_hostile_vm_name_and_set_id_stay_text_and_round_trip_through_the_link() -> None:
    page = page_of(vm_backups(HOSTILE_VM, snapshot_set(HOSTILE_SET, HOSTILE_VM)), group='g"<b>')

    assert "<script>" not in page
    assert "<img" not in page
    assert "<b>" not in page.split("<h2")[1][:60]
    html = Elements(page)
    assert HOSTILE_SET in html.texts["set-id"]
    for link in html.find("a", **{"class": "restore"}):
        href = link["href"] or ""
        assert re.fullmatch(r"restore\?[A-Za-z0-9_.~%=&-]+", href), href  # every value percent-encoded
        assert parse_qs(urlsplit(href).query) == {
            "group": ['g"<b>'],
            "vm": [HOSTILE_VM],
            "snapshot_set": [HOSTILE_SET],
        }
    assert restore_href("web", "a&b", "c=d") == "restore?group=web&vm=a%26b&snapshot_set=c%3Dd"


def form(vm: str = "us-central1-a/web-1", snapshot_set: str = "20261201030000") -> RestoreForm:
    return RestoreForm(
        "web",
        "gce_vm_backup_restore__web",
        "projects/p/zones/us-central1-a/instances/web-1",
        snapshot_set,
        fields=[
            FormField(
                "vm",
                {"type": "string", "enum": ["us-central1-a/web-1", "us-central1-a/web-2"], "title": "VM"},
                vm,
            ),
            FormField(
                "snapshot_set", {"type": "string", "title": "Snapshot set"}, snapshot_set, "newest or id"
            ),
            FormField("mode", {"type": "string", "enum": ["new-vm", "replace-disks"]}, "new-vm"),
            FormField("new_name", {"type": ["null", "string"]}, None),
            FormField("dry_run", {"type": "boolean"}, False),
        ],
    )


def test_the_restore_form_has_the_vm_and_the_set_filled_in_and_posts_to_the_restore_dag() -> None:
    html = Elements(render_restore_form(form()))

    (vm,) = html.find("select", id="field-vm")
    assert vm["data-kind"] == "string"
    assert [a.get("value") for a in html.find("option") if "selected" in a] == [
        "us-central1-a/web-1",
        "new-vm",
    ]
    (chosen,) = html.find("input", id="field-snapshot_set")
    assert chosen["value"] == "20261201030000"
    assert "required" in chosen
    (new_name,) = html.find("input", id="field-new_name")
    assert (new_name["value"], new_name["data-kind"], "required" in new_name) == ("", "nullable", False)
    (dry_run,) = html.find("input", id="field-dry_run")
    assert (dry_run["type"], "checked" in dry_run) == ("checkbox", False)
    (target,) = html.find("form", id="restore-form")
    assert target["data-api"] == "../api/v2/dags/gce_vm_backup_restore__web/dagRuns"
    assert target["data-runs"] == "../dags/gce_vm_backup_restore__web/runs/"


def test_a_hostile_set_id_in_the_form_is_a_value_never_markup() -> None:
    page = render_restore_form(form(vm=HOSTILE_VM, snapshot_set=HOSTILE_SET))

    assert "<img" not in page
    assert "<script>alert" not in page
    html = Elements(page)
    assert html.find("input", id="field-snapshot_set")[0]["value"] == HOSTILE_SET
    # a VM outside the form's closed list is shown as the link asked (Airflow refuses it on trigger)
    assert next(a["value"] for a in html.find("option") if "selected" in a) == HOSTILE_VM


def test_an_unknown_group_form_says_so_and_has_no_field() -> None:
    missing = RestoreForm("nope", "gce_vm_backup_restore__nope", "vm", "s", problem="No group 'nope' here.")
    page = render_restore_form(missing)
    assert "No group &#x27;nope&#x27; here." in page
    assert "<form" not in page
    assert "<script" not in page


def test_the_form_vm_is_the_closed_lists_entry_for_the_vm_else_its_path() -> None:
    path = "projects/p/zones/us-central1-a/instances/web-1"
    assert form_vm(path, {"enum": ["us-central1-a/web-2", "us-central1-a/web-1"]}) == "us-central1-a/web-1"
    assert form_vm(path, {"enum": ["web-1"]}) == "web-1"
    assert form_vm(path, {"enum": [path, "us-central1-a/web-1"]}) == path
    assert form_vm(path, {"enum": ["us-central1-a/web-2"]}) == path  # not in the list: refused on trigger
    assert form_vm(path, {"type": ["null", "string"]}) == path
    assert form_vm("web-1", {"enum": ["us-central1-a/web-1"]}) == "web-1"  # not a path: as given


def points(days: list[int], downtime: float, size_gib: int) -> list[RunPoint]:
    return [
        RunPoint(run=f"r{d}", at=T0 + timedelta(days=d), downtime_s=downtime, storage_bytes=size_gib << 30)
        for d in days
    ]


def axis(chart: str, cls: str) -> list[str]:
    return Elements(chart).texts.get(cls, [])


def test_every_chart_shares_one_dated_time_axis_and_labelled_scales() -> None:
    a, b = "projects/p/zones/z/instances/a", "projects/p/zones/z/instances/b"
    runs = {a: points([0, 1, 2], 30, 2), b: points([5, 6], 300, 40)}
    page = page_of(vm_backups(a), vm_backups(b), runs=runs)
    charts = re.findall(r'<svg class="chart".*?</svg>', page)
    assert len(charts) == 2

    times = [axis(c, "tick-time") for c in charts]
    assert times[0] == times[1]  # one time axis: the same domain on every chart
    assert all(re.fullmatch(r"2026-1[12]-\d\d", t) for t in times[0])
    assert len(set(times[0])) == len(times[0]) >= 3  # real, distinct dates, not "01-01 ... 01-01"
    assert times[0][0] <= "2026-12-01"
    assert times[0][-1] >= "2026-12-07"
    for chart in charts:
        assert axis(chart, "axis-title") == ["downtime (s)", "snapshot size (GiB)", "run time (UTC)"]
        assert axis(chart, "tick-downtime") == ["0", "100", "200", "300"]  # shared, round, not only the max
        assert axis(chart, "tick-size") == ["0", "10", "20", "30", "40"]
    # a run's bars sit at its time: b's first run (day 5) is right of a's last (day 2)
    xs = [float(x) for x in re.findall(r'<rect class="size" x="([\d.]+)"', page)]
    assert xs == sorted(xs)
    assert len(xs) == 5


def test_runs_within_a_day_get_the_date_once_and_times() -> None:
    within = [
        RunPoint(run="r", at=T0 + timedelta(minutes=m), downtime_s=12, storage_bytes=1 << 30) for m in (0, 40)
    ]
    scales = page_scales([GroupView("web", "d", None, runs={"vm": within})])
    ticks = axis(chart_svg("vm", within, scales), "tick-time")
    assert ticks[0].startswith("2026-12-01 ")
    assert all(re.fullmatch(r"\d\d:\d\d", t) for t in ticks[1:])


def test_nice_ticks_cover_the_maximum_with_round_steps() -> None:
    assert nice_ticks(42.5) == (0, 20, 40, 60)  # at most 4 steps
    assert nice_ticks(300) == (0, 100, 200, 300)
    assert nice_ticks(0.3) == (0, 0.1, 0.2, 0.3)
    assert nice_ticks(0) == (0, 1)  # no value: a unit scale, not a division by zero


def test_a_chart_without_runs_says_so() -> None:
    assert "no runs yet" in chart_svg("vm", [])
