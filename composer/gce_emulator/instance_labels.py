"""``instances.setLabels``: a VM's labels replaced whole, guarded by its ``labelFingerprint``.

The v1 API reference (https://cloud.google.com/compute/docs/reference/rest/v1/instances/setLabels): the
body is ``InstancesSetLabelsRequest`` ``{labels, labelFingerprint}``; "labelFingerprint: Fingerprint of the
previous set of labels for this resource, used to prevent conflicts. Provide the latest fingerprint value
when making a request to add or change labels." A stale or missing fingerprint is refused with HTTP 412
``conditionNotMet`` ("Labels fingerprint either invalid or resource labels have changed"), so a read,
change, write with the fingerprint read is a compare-and-set. The labels replace the old ones (a new
fingerprint at once); the call returns a zonal operation. ``requestId`` is honoured as for every other
mutation: a repeat returns the original operation and does nothing. An operation that a fault makes fail
leaves the labels as they were. Callers hold ``world.lock``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gce_emulator.model import DEFAULT_TIMINGS, Operation, World
from gce_emulator.restore import PreconditionFailed, check_fields, check_labels, fingerprint, repeat

DEFAULT_TIMINGS.setdefault("instance_set_labels", 0.5)  # seconds until the setLabels operation is DONE


def add_instance_fingerprints(world: World) -> None:
    """Every VM has a ``labelFingerprint`` (instances.get returns it), seeded ones too."""
    for instance in world.instances.values():
        instance.setdefault("labelFingerprint", fingerprint(instance.get("labels") or {}))


def set_instance_labels(
    world: World, project: str, zone: str, name: str, body: Mapping[str, Any], query: Mapping[str, str]
) -> Operation:
    """instances.setLabels: 412 for a stale or missing fingerprint, 400 for invalid labels or fields the
    reference does not list, 404 for a missing VM; otherwise the labels are replaced and a new
    fingerprint computed."""
    scope = f"zones/{zone}"
    world.check_location(project, scope)
    existing = repeat(world, project, query)
    if existing is not None:
        return existing
    if not isinstance(body, Mapping):
        body = {}
    check_fields(body, frozenset({"labels", "labelFingerprint"}), "instances.setLabels")
    path = f"projects/{project}/{scope}/instances/{name}"
    instance = world.find(world.instances, path)
    current = instance.setdefault("labelFingerprint", fingerprint(instance.get("labels") or {}))
    if not body.get("labelFingerprint") or body.get("labelFingerprint") != current:
        raise PreconditionFailed(
            f"Labels fingerprint either invalid or resource labels have changed (resource '{path}')"
        )
    labels = check_labels(body.get("labels"), "labels")
    before = dict(instance.get("labels") or {}), current

    def undo() -> None:  # a failed operation changes nothing (unless the labels changed since)
        if instance.get("labelFingerprint") == fingerprint(labels):
            instance["labels"], instance["labelFingerprint"] = before

    op, _ = world.start_operation(
        method="compute.instances.setLabels",
        project=project,
        scope=scope,
        operation_type="setLabels",
        target=path,
        request_id=query.get("requestId"),
        duration=world.timings["instance_set_labels"],
        on_done=None,
        on_fail=undo,
    )
    instance["labels"], instance["labelFingerprint"] = labels, fingerprint(labels)
    return op
