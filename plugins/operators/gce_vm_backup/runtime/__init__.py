"""What every task of the package runs on: run identity, the hook mixin, failure records, bounded
waits, the VM's lease."""
