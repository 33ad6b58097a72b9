"""The VM backups page served by the UI plugin."""
