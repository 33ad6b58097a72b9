variable "project_id" {
  description = "Project that hosts the Composer environment and its service account."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid Google Cloud project id (6-30 chars, lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region of the Composer environment, for example europe-west1."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must look like europe-west1 or us-central1."
  }
}

variable "environment_name" {
  description = "Name of the Composer environment."
  type        = string
  default     = "vm-backup"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,62}[a-z0-9])?$", var.environment_name))
    error_message = "environment_name must be 1-64 chars: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "image_version" {
  # The newest image of Google's version list; compat/images/ holds its package set, and CI tests it
  # (docs/deploy.md, "Supported Airflow versions").
  description = "Composer image. Must be Composer 3 on Airflow 3 (the operators use the airflow.sdk API)."
  type        = string
  default     = "composer-3-airflow-3.3.1-build.10"

  validation {
    condition     = can(regex("^composer-3-airflow-3(\\.[0-9]+){0,2}(-build\\.[0-9]+)?$", var.image_version))
    error_message = "image_version must be a Composer 3 image on Airflow 3, e.g. composer-3-airflow-3.3.1-build.10 or composer-3-airflow-3.1.7-build.0."
  }
}

variable "environment_size" {
  description = "Composer environment size."
  type        = string
  default     = "ENVIRONMENT_SIZE_SMALL"

  validation {
    condition     = contains(["ENVIRONMENT_SIZE_SMALL", "ENVIRONMENT_SIZE_MEDIUM", "ENVIRONMENT_SIZE_LARGE"], var.environment_size)
    error_message = "environment_size must be ENVIRONMENT_SIZE_SMALL, ENVIRONMENT_SIZE_MEDIUM or ENVIRONMENT_SIZE_LARGE."
  }
}

variable "service_account_id" {
  description = "Account id (the part before @) of the dedicated service account the environment runs as."
  type        = string
  default     = "vm-backup-composer"

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.service_account_id))
    error_message = "service_account_id must be 6-30 chars: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "target_project_ids" {
  description = "Projects whose VMs are backed up. The backup role is created and granted in each. Empty means the environment's own project."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.target_project_ids : can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", p))])
    error_message = "Every entry of target_project_ids must be a valid project id."
  }
}

variable "custom_role_id" {
  description = "Id of the custom IAM role created in each target project for the backup operators."
  type        = string
  default     = "gceVmBackupOperator"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.]{3,64}$", var.custom_role_id))
    error_message = "custom_role_id must be 3-64 chars of letters, digits, underscores and dots."
  }
}

variable "compute_endpoint" {
  description = "Optional Compute Engine API endpoint, https://HOST[:PORT] on googleapis.com (Private Service Connect, a regional endpoint). Empty means Google's default. Another host needs the connection extra compute_endpoint_allowed_hosts."
  type        = string
  default     = ""

  validation {
    condition     = var.compute_endpoint == "" || can(regex("^https://([a-z0-9-]+\\.)*googleapis\\.com(:[0-9]{1,5})?/?$", var.compute_endpoint))
    error_message = "compute_endpoint must be empty or https://HOST[:PORT] with HOST on googleapis.com (the service account's token goes there)."
  }
}

variable "labels" {
  description = "Labels put on the Composer environment."
  type        = map(string)
  default     = {}
}

variable "triggerer_count" {
  description = "Airflow triggerers. The default wait_mode (defer) needs at least 1; 0 only if every group uses reschedule or worker."
  type        = number
  default     = 1

  validation {
    condition     = var.triggerer_count >= 0 && var.triggerer_count <= 10 && floor(var.triggerer_count) == var.triggerer_count
    error_message = "triggerer_count must be a whole number from 0 to 10 (Composer 3's limits)."
  }
}

# ---- restores and drills: their own roles and accounts, off unless asked for -------------------------
variable "enable_restore" {
  description = "Create the restore role (gceVmBackupRestore: disks from snapshots, VMs from disks, disk swaps; no delete) and a restore service account the environment impersonates for restores. Off by default, so that a backup-only deployment holds no right to create a VM or a disk."
  type        = bool
  default     = false
}

variable "restore_role_id" {
  description = "Id of the custom IAM role created for restores in each target project (only with enable_restore)."
  type        = string
  default     = "gceVmBackupRestore"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.]{3,64}$", var.restore_role_id))
    error_message = "restore_role_id must be 3-64 chars of letters, digits, underscores and dots."
  }
}

variable "restore_service_account_id" {
  description = "Account id (the part before @) of the restore service account (only with enable_restore). The restore DAGs run their Compute Engine calls as it (config key restore_service_account)."
  type        = string
  default     = "vm-backup-restore"

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.restore_service_account_id))
    error_message = "restore_service_account_id must be 6-30 chars: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "restore_rebuild_grants" {
  description = "Also grant the restore account what rebuilding a deleted VM with its metadata, network tags and service account needs (setMetadata, setTags, setServiceAccount; role restore_rebuild_role_id). actAs on the VM's service account is never granted here. Only with enable_restore."
  type        = bool
  default     = false
}

variable "restore_rebuild_role_id" {
  description = "Id of the custom IAM role with the rebuild permissions (only with restore_rebuild_grants)."
  type        = string
  default     = "gceVmBackupRestoreRebuild"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.]{3,64}$", var.restore_rebuild_role_id))
    error_message = "restore_rebuild_role_id must be 3-64 chars of letters, digits, underscores and dots."
  }
}

variable "drill_scratch_project" {
  description = "The project restore drills create (and delete) their disks and VMs in; never a target project. Empty: no drill account or roles (only with enable_restore)."
  type        = string
  default     = ""

  validation {
    condition     = var.drill_scratch_project == "" || can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.drill_scratch_project))
    error_message = "drill_scratch_project must be empty or a valid project id."
  }
}

variable "drill_service_account_id" {
  description = "Account id (the part before @) of the drill service account (only with enable_restore and drill_scratch_project). The drill DAGs run as it (config key drill_service_account)."
  type        = string
  default     = "vm-backup-drill"

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.drill_service_account_id))
    error_message = "drill_service_account_id must be 6-30 chars: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "drill_role_id" {
  description = "Id of the custom IAM role created for drills in the scratch project."
  type        = string
  default     = "gceVmBackupDrill"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.]{3,64}$", var.drill_role_id))
    error_message = "drill_role_id must be 3-64 chars of letters, digits, underscores and dots."
  }
}

variable "drill_read_role_id" {
  description = "Id of the custom IAM role created for drills (reads only) in each target project."
  type        = string
  default     = "gceVmBackupDrillRead"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.]{3,64}$", var.drill_read_role_id))
    error_message = "drill_read_role_id must be 3-64 chars of letters, digits, underscores and dots."
  }
}

# ---- monitoring: a log-based metric of each VM's backup age and an alert on a stale VM, off unless asked --
variable "enable_monitoring" {
  description = "Create the log-based metric gce_vm_backup_backup_age (each VM's newest good backup age, from the signals task's log line) and an alert policy firing when a VM's age passes stale_backup_hours. Off by default."
  type        = bool
  default     = false
}

variable "stale_backup_hours" {
  description = "The alert fires when a backup run reports a VM whose newest complete READY snapshot set is older than this many hours (only with enable_monitoring)."
  type        = number
  default     = 48

  validation {
    condition     = var.stale_backup_hours > 0 && var.stale_backup_hours <= 8760
    error_message = "stale_backup_hours must be more than 0 and at most 8760 (a year)."
  }
}

variable "notification_channel_ids" {
  description = "Cloud Monitoring notification channels the stale-backup alert notifies (projects/P/notificationChannels/N); empty: the alert shows in the console only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.notification_channel_ids : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", id))])
    error_message = "Each notification channel id must be projects/PROJECT/notificationChannels/ID."
  }
}
