"""The DAG factory: backup, restore, drill and freshness DAGs from the config."""
