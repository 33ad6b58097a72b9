"""The YAML config: its models, file loading, labels, the manifest format. No Google import."""
