locals {
  # The projects whose VMs this environment backs up.
  target_projects = toset(length(var.target_project_ids) > 0 ? var.target_project_ids : [var.project_id])

  # Environment variables read by the gce_vm_backup package (see docs/config.md).
  backup_env = merge(
    # Strict mode would hide every group when one is broken; in production we prefer the other
    # groups keep running and the broken one shows as an import error.
    { GCE_VM_BACKUP_STRICT = "0" },
    var.compute_endpoint == "" ? {} : { GCE_VM_BACKUP_COMPUTE_ENDPOINT = var.compute_endpoint },
  )
}

data "google_project" "environment" {
  project_id = var.project_id
}

resource "google_service_account" "composer" {
  project      = var.project_id
  account_id   = var.service_account_id
  display_name = "Composer environment ${var.environment_name} (VM backups)"
  description  = "Runs the gce-vm-backup DAGs: stops, snapshots and starts Compute Engine VMs."
}

resource "google_composer_environment" "this" {
  provider = google
  project  = var.project_id
  region   = var.region
  name     = var.environment_name
  labels   = var.labels

  config {
    environment_size = var.environment_size

    software_config {
      image_version = var.image_version
      env_variables = local.backup_env
    }

    node_config {
      service_account = google_service_account.composer.email
    }

    # The backup sensors wait by deferring on Airflow's built-in TimeDeltaTrigger (wait_mode "defer"),
    # so the environment needs a triggerer; Composer 3 runs none unless asked.
    workloads_config {
      triggerer {
        count     = var.triggerer_count
        cpu       = 0.5
        memory_gb = 1
      }
    }
  }

  depends_on = [
    google_project_iam_member.composer_worker,
    google_service_account_iam_member.composer_service_agent,
  ]
}
