# Least privilege: the environment runs as its own service account. It gets what Composer itself
# needs (composer.worker) and, in every target project, a custom role holding exactly the Compute
# Engine permissions the operators call (tests/deploy/test_terraform.py keeps this list equal to
# gce_vm_backup.permissions.REQUIRED_PERMISSIONS, and the test session's emulator call log keeps the
# API methods behind it equal to what the package calls). All grants are additive (*_iam_member).

locals {
  backup_permissions = [
    # Precheck reads the VM (its attached disks come with it); label selectors list VMs (list covers
    # aggregatedList).
    "compute.instances.get",
    "compute.instances.list",
    # Stop before the snapshot, start (or resume) after it.
    "compute.instances.stop",
    "compute.instances.start",
    "compute.instances.resume",
    # snapshots.insert with a source disk (zonal or regional) needs createSnapshot on the disk ...
    "compute.disks.createSnapshot",
    "compute.regionDisks.createSnapshot",
    # ... and create + setLabels on the snapshot (labels mark it as made by this project).
    "compute.snapshots.create",
    "compute.snapshots.setLabels",
    # Find our own snapshot again on retry, verify READY, list for retention, delete expired ones.
    "compute.snapshots.get",
    "compute.snapshots.list",
    "compute.snapshots.delete",
    # snapshot_mode: instant. Instant snapshots (zonal and regional alike use these permissions): make
    # one of each disk while the VM is down, find it again on retry, list a disk's leftovers, delete it
    # once converted; the conversion (snapshots.insert with sourceInstantSnapshot) reads it.
    "compute.instantSnapshots.create",
    "compute.instantSnapshots.setLabels",
    "compute.instantSnapshots.get",
    "compute.instantSnapshots.list",
    "compute.instantSnapshots.delete",
    "compute.instantSnapshots.useReadOnly",
    # The instant-mode precheck reads each disk's type (zonal and regional disks).
    "compute.disks.get",
    # Wait on every long-running operation (operations.wait needs .get): instance operations and instant
    # snapshots of zonal disks are zonal, instant snapshots of regional disks regional, snapshot
    # operations global (for regional disks too).
    "compute.zoneOperations.get",
    "compute.regionOperations.get",
    "compute.globalOperations.get",
  ]
}

# Composer needs this role on its environment's service account to run Airflow components.
resource "google_project_iam_member" "composer_worker" {
  project = var.project_id
  role    = "roles/composer.worker" # checkov:skip=CKV_GCP_49:roles/composer.worker is required by a Composer environment's service account and grants no IAM administration.
  member  = "serviceAccount:${google_service_account.composer.email}"
}

# Composer 3 with a user-managed service account: the Composer Service Agent must be able to act on it.
resource "google_service_account_iam_member" "composer_service_agent" {
  service_account_id = google_service_account.composer.name
  role               = "roles/composer.ServiceAgentV2Ext"
  member             = "serviceAccount:service-${data.google_project.environment.number}@cloudcomposer-accounts.iam.gserviceaccount.com"
}

# The backup role, created in each project whose VMs are backed up (custom project roles are per project).
resource "google_project_iam_custom_role" "backup" {
  for_each = local.target_projects

  project     = each.value
  role_id     = var.custom_role_id
  title       = "GCE VM backup operator"
  description = "Stop, snapshot and start VMs and prune the snapshots gce-vm-backup made. Managed by terraform."
  permissions = local.backup_permissions
}

# The environment's service account gets the backup role in each target project.
resource "google_project_iam_member" "backup" {
  for_each = local.target_projects

  project = each.value
  role    = google_project_iam_custom_role.backup[each.value].id
  member  = "serviceAccount:${google_service_account.composer.email}"
}

# ---- restore (issue 14) -----------------------------------------------------------------------------
# Restores and drills create and delete VMs and disks: rights the backup account must never hold. So they
# get a role and a service account of their own, created only with var.enable_restore (default false).
# tests/deploy/test_terraform.py keeps this list equal to gce_vm_backup.permissions.
# RESTORE_REQUIRED_PERMISSIONS, and the test session's call log keeps the API methods behind it equal to
# what the restore hook calls.
locals {
  restore_permissions = [
    # Read the VM to restore or swap disks on; stop and start it around the swap (replace-disks); find
    # the group's VMs and a drill's leftovers by label (list covers aggregatedList).
    "compute.instances.get",
    "compute.instances.list",
    "compute.instances.stop",
    "compute.instances.start",
    # Find the snapshot sets by label, and read their snapshots into new disks.
    "compute.snapshots.list",
    "compute.snapshots.useReadOnly",
    # New disks (zonal and regional disks share these permissions), labelled at creation and after (the old
    # disks replace-disks leaves detached for a rollback); drills delete only the disks they labelled.
    "compute.disks.create",
    "compute.disks.get",
    "compute.disks.list",
    "compute.disks.setLabels",
    "compute.disks.delete",
    # A VM from those disks: no external IP and no service account on it, so neither
    # compute.subnetworks.useExternalIp nor iam.serviceAccounts.actAs.
    "compute.instances.create",
    "compute.disks.use",
    "compute.subnetworks.use",
    "compute.instances.setLabels",
    "compute.instances.setMetadata",
    "compute.instances.delete",
    # Swap disks on the stopped VM.
    "compute.instances.attachDisk",
    "compute.instances.detachDisk",
    # "The OS came up": a guest attribute or a serial port line.
    "compute.instances.getGuestAttributes",
    "compute.instances.getSerialPortOutput",
    # Wait on the operations: VMs and zonal disks are zonal, regional disks regional.
    "compute.zoneOperations.get",
    "compute.regionOperations.get",
  ]

  restore_projects = var.enable_restore ? setunion(local.target_projects, toset(var.restore_project_ids)) : toset([])
}

# The account restores and drills run as. The environment's account only impersonates it, so a backup
# task (which does not impersonate) can never use these rights.
resource "google_service_account" "restore" {
  count = var.enable_restore ? 1 : 0

  project      = var.project_id
  account_id   = var.restore_service_account_id
  display_name = "gce-vm-backup restores and drills (${var.environment_name})"
  description  = "Creates disks from snapshots and VMs from disks, swaps disks; impersonated by the Composer environment's account."
}

# The restore role, in each project a restore reads snapshots from or creates resources in.
resource "google_project_iam_custom_role" "restore" {
  for_each = local.restore_projects

  project     = each.value
  role_id     = var.restore_role_id
  title       = "GCE VM backup restore"
  description = "Restore VMs from gce-vm-backup snapshots, and run restore drills. Managed by terraform."
  permissions = local.restore_permissions
}

# The restore account gets the restore role in each of those projects.
resource "google_project_iam_member" "restore" {
  for_each = local.restore_projects

  project = each.value
  role    = google_project_iam_custom_role.restore[each.value].id
  member  = "serviceAccount:${google_service_account.restore[0].email}"
}

# The environment's account may mint tokens for the restore account (the restore DAGs' impersonation_chain),
# on that one account only, never project-wide.
resource "google_service_account_iam_member" "composer_impersonates_restore" {
  count = var.enable_restore ? 1 : 0

  service_account_id = google_service_account.restore[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.composer.email}"
}
