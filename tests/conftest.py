"""Shared fixtures: the Compute Engine emulator (gce_emulator.pytest_plugin)."""

pytest_plugins = ["gce_emulator.pytest_plugin"]
