"""The `vm-backup` command: validate a config, sync to Composer, run the local demo."""
