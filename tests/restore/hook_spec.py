"""The restore hook the unit tests autospec: g-restore-api's RestoreHook when it is there, else a class
with exactly the methods and keyword-only signatures of its contract (RESTORE.md), so a call the real
hook would refuse fails here too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gce_vm_backup.hook import ComputeBackupHook

try:
    from gce_vm_backup.restore_hook import RestoreHook as RestoreHookSpec
except ImportError:  # before the merge of g-restore-api

    class RestoreHookSpec(ComputeBackupHook):  # type: ignore[no-redef]
        def insert_disk(
            self,
            *,
            project_id: str,
            zone: str | None = None,
            region: str | None = None,
            name: str,
            source_snapshot: str,
            disk_type: str | None = None,
            size_gb: int | None = None,
            labels: dict[str, str],
            replica_zones: list[str] | None = None,
            request_id: str,
        ) -> Any: ...

        def get_disk(
            self, *, project_id: str, zone: str | None = None, region: str | None = None, name: str
        ) -> Any: ...

        def list_disks(
            self, *, project_id: str, zone: str | None = None, region: str | None = None, filter: str
        ) -> Iterator[Any]: ...

        def delete_disk(
            self,
            *,
            project_id: str,
            zone: str | None = None,
            region: str | None = None,
            name: str,
            request_id: str,
        ) -> Any: ...

        def insert_instance(self, *, project_id: str, zone: str, instance: Any, request_id: str) -> Any: ...

        def delete_instance(self, *, project_id: str, zone: str, name: str, request_id: str) -> Any: ...

        def attach_disk(
            self, *, project_id: str, zone: str, instance: str, attached_disk: Any, request_id: str
        ) -> Any: ...

        def detach_disk(
            self, *, project_id: str, zone: str, instance: str, device_name: str, request_id: str
        ) -> Any: ...

        def get_guest_attributes(
            self, *, project_id: str, zone: str, instance: str, query_path: str
        ) -> Any: ...

        def get_serial_port_output(
            self, *, project_id: str, zone: str, instance: str, start: int = 0
        ) -> Any: ...

        def set_disk_labels(
            self,
            *,
            project_id: str,
            zone: str | None = None,
            region: str | None = None,
            name: str,
            labels: dict[str, str],
            label_fingerprint: str,
            request_id: str,
        ) -> Any: ...
