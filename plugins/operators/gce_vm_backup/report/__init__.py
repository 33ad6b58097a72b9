"""The run report, its text, the failure notifiers and the backups view."""
