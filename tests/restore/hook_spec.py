"""The restore hook the unit tests autospec: the real RestoreHook, so a call it would refuse fails here too."""

from __future__ import annotations

from gce_vm_backup.compute.restore_hook import RestoreHook as RestoreHookSpec

__all__ = ["RestoreHookSpec"]
