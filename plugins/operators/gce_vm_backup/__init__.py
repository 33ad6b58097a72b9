"""Back up Compute Engine VMs from Cloud Composer: stop, snapshot every disk, start again, safely.

This package is synced to ``plugins/operators/gce_vm_backup`` in the Composer bucket. It is kept
import-free on purpose: importing it (as the DAG processor does at every parse) must not pull in any
Google client library. See docs/architecture.md for the module map.
"""

# The package's version: the wheel's (pyproject.toml reads it from here) and the synced copy's, which
# gce_vm_backup.runtime.install compares when both are present.
__version__ = "0.1.0"
