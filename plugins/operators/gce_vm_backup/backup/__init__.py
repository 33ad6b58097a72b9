"""The backup of one VM, stage by stage: resolve, plan, precheck, downtime, capture, verify or
convert, retention, the cap on VMs down at once."""
