"""Talking to Compute Engine: the endpoint, the hooks, operations, resource paths and names,
snapshot holds. No Airflow task logic."""
