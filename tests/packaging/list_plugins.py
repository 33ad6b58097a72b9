"""Prints, as JSON, the plugins Airflow registers ([core] plugins_folder and the installed entry points) and
its plugin import errors: `python list_plugins.py` in the environment to look at (Airflow 3.1.7 to 3.3.x)."""

from __future__ import annotations

import json

from airflow import plugins_manager

plugins = plugins_manager.get_plugin_info()
# Airflow 3.2+ has get_import_errors(); 3.1 keeps them in the module's import_errors.
get_errors = getattr(plugins_manager, "get_import_errors", None)
errors = get_errors() if get_errors else plugins_manager.import_errors
print(json.dumps({"plugins": [[p["name"], str(p["source"])] for p in plugins], "import_errors": errors}))
