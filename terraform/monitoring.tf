# Each VM's backup age as a log-based metric, and an alert on a stale VM (docs/metrics.md). Off unless
# enable_monitoring. The source is the signals task's log line in the environment's task logs:
#   gce-vm-backup-signal {"event": "vm_backup", ..., "vm": "projects/P/zones/Z/instances/I", ...,
#   "newest_good_age_seconds": 3600, ...}
# Composer writes a task's log lines to the airflow-worker log as textPayload; the values are taken from
# the JSON with regular expressions (a line whose age is null, no good set at all, gives no value: the
# freshness DAG reports those VMs).

locals {
  monitoring        = var.enable_monitoring ? 1 : 0
  signal_log_filter = <<-EOT
    resource.type="cloud_composer_environment"
    resource.labels.environment_name="${var.environment_name}"
    log_id("airflow-worker")
    textPayload:"gce-vm-backup-signal {"
  EOT
  backup_age_metric = "gce_vm_backup_backup_age"
}

resource "google_logging_metric" "backup_age" {
  count       = local.monitoring
  project     = var.project_id
  name        = local.backup_age_metric
  description = "Age in seconds of each VM's newest complete READY snapshot set, as each backup run reports it (gce-vm-backup)."
  filter      = local.signal_log_filter

  value_extractor = "REGEXP_EXTRACT(textPayload, \"\\\"newest_good_age_seconds\\\": ([0-9]+)\")"

  label_extractors = {
    "vm"         = "REGEXP_EXTRACT(textPayload, \"\\\"vm\\\": \\\"([^\\\"]*)\\\"\")"
    "group"      = "REGEXP_EXTRACT(textPayload, \"\\\"group\\\": \\\"([^\\\"]*)\\\"\")"
    "deployment" = "REGEXP_EXTRACT(textPayload, \"\\\"deployment\\\": \\\"([^\\\"]*)\\\"\")"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "s"
    display_name = "gce-vm-backup: newest good backup age"

    labels {
      key         = "vm"
      value_type  = "STRING"
      description = "The VM: projects/P/zones/Z/instances/NAME"
    }
    labels {
      key         = "group"
      value_type  = "STRING"
      description = "The config group"
    }
    labels {
      key         = "deployment"
      value_type  = "STRING"
      description = "The config's deployment"
    }
  }

  # Hours to weeks: exponential buckets from 1 minute.
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 20
      growth_factor      = 2
      scale              = 60
    }
  }
}

resource "google_monitoring_alert_policy" "stale_backup" {
  count                 = local.monitoring
  project               = var.project_id
  display_name          = "gce-vm-backup: a VM's newest good backup is older than ${var.stale_backup_hours}h (${var.environment_name})"
  combiner              = "OR"
  notification_channels = var.notification_channel_ids

  conditions {
    display_name = "newest good backup older than ${var.stale_backup_hours}h"

    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.backup_age[0].name}\" AND resource.type=\"cloud_composer_environment\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.stale_backup_hours * 3600
      duration        = "0s"

      aggregations {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_PERCENTILE_99"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["metric.label.vm", "metric.label.group", "metric.label.deployment"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A backup run of gce-vm-backup reported a VM (label `vm`) whose newest complete READY snapshot set is older than ${var.stale_backup_hours} hours: its recent backups failed. The run's report (task `run_report`) and the VM's line in the `signals` task log say why. See docs/metrics.md."
  }
}
