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
    # The per-VM lease: a label on the VM, written with its labelFingerprint, so that one backup, restore
    # or drill acts on a VM at a time.
    "compute.instances.setLabels",
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

# ---- restores and drills: accounts and roles of their own, off unless enable_restore ------------------
# Restores create disks and VMs, and swap disks; drills also delete what they made. The backup account
# holds none of these rights. Each list below is kept equal to its constant in gce_vm_backup.permissions
# (tests/deploy/test_terraform.py), and the test session's call log keeps the API methods behind them equal
# to what the restore hook calls. docs/access.md says which boundary this draws and which it does not.
locals {
  # The restore DAG, in each target project. It deletes nothing and sets no metadata.
  restore_permissions = [
    # Read the VM to restore or swap disks on; stop and start it around the swap (replace-disks); find the
    # group's VMs by label (list covers aggregatedList).
    "compute.instances.get",
    "compute.instances.list",
    "compute.instances.stop",
    "compute.instances.start",
    # Find the snapshot sets by label; hold the chosen set from retention (read each snapshot's
    # labelFingerprint, set the hold label: a global operation); read the snapshots into new disks.
    "compute.snapshots.list",
    "compute.snapshots.get",
    "compute.snapshots.setLabels",
    "compute.snapshots.useReadOnly",
    "compute.globalOperations.get",
    # New disks (zonal and regional disks share these permissions), labelled at creation, and the label on
    # the old disks replace-disks leaves detached.
    "compute.disks.create",
    "compute.disks.get",
    "compute.disks.setLabels",
    # new-vm: a VM from those disks, labelled; no metadata, no external IP, no service account on it.
    "compute.instances.create",
    "compute.disks.use",
    "compute.subnetworks.use",
    "compute.instances.setLabels",
    # Swap disks on the stopped VM.
    "compute.instances.attachDisk",
    "compute.instances.detachDisk",
    # Wait on the operations: VMs and zonal disks are zonal, regional disks regional.
    "compute.zoneOperations.get",
    "compute.regionOperations.get",
  ]

  # The drill, in its scratch project only: create, check and delete a copy.
  drill_permissions = [
    # Disks from the target projects' snapshots, labelled as the drill run's; found again and listed for
    # the cleanup, which deletes them.
    "compute.disks.create",
    "compute.disks.get",
    "compute.disks.list",
    "compute.disks.setLabels",
    "compute.disks.delete",
    # A throwaway VM from them (metadata enable-guest-attributes for a guest-attribute boot check; no
    # external IP, no service account), deleted by the cleanup.
    "compute.instances.create",
    "compute.instances.get",
    "compute.instances.list",
    "compute.instances.setLabels",
    "compute.instances.setMetadata",
    "compute.instances.delete",
    "compute.disks.use",
    "compute.subnetworks.use",
    # "The OS came up": a guest attribute or a serial port line.
    "compute.instances.getGuestAttributes",
    "compute.instances.getSerialPortOutput",
    "compute.zoneOperations.get",
  ]

  # The drill, in each target project: reads only. The group's VMs (by label) and their boot disks, their
  # snapshot sets, and the snapshots read into the scratch project's disks.
  drill_read_permissions = [
    "compute.instances.get",
    "compute.instances.list",
    "compute.snapshots.list",
    "compute.snapshots.useReadOnly",
  ]

  # Only with restore_rebuild_grants: what a VM rebuilt from its manifest needs beyond the restore role
  # when it had metadata values, network tags or a service account.
  restore_rebuild_permissions = [
    "compute.instances.setMetadata",
    "compute.instances.setTags",
    "compute.instances.setServiceAccount",
  ]

  restore_projects = var.enable_restore ? local.target_projects : toset([])
  rebuild_projects = var.enable_restore && var.restore_rebuild_grants ? local.target_projects : toset([])
  drill_enabled    = var.enable_restore && var.drill_scratch_project != ""
  drill_projects   = local.drill_enabled ? local.target_projects : toset([])
}

# The account restores run as. The environment's account only impersonates it (the restore DAGs'
# impersonation_chain, config key restore_service_account); the backup DAGs never do.
resource "google_service_account" "restore" {
  count = var.enable_restore ? 1 : 0

  project      = var.project_id
  account_id   = var.restore_service_account_id
  display_name = "gce-vm-backup restores (${var.environment_name})"
  description  = "Creates disks from snapshots and VMs from disks, swaps disks; deletes nothing. Impersonated by the Composer environment's account."
}

# The restore role, in each target project.
resource "google_project_iam_custom_role" "restore" {
  for_each = local.restore_projects

  project     = each.value
  role_id     = var.restore_role_id
  title       = "GCE VM backup restore"
  description = "Restore VMs from gce-vm-backup snapshots (no delete, no metadata). Managed by terraform."
  permissions = local.restore_permissions
}

# The restore account gets the restore role in each target project.
resource "google_project_iam_member" "restore" {
  for_each = local.restore_projects

  project = each.value
  role    = google_project_iam_custom_role.restore[each.value].id
  member  = "serviceAccount:${google_service_account.restore[0].email}"
}

# Rebuilding a VM that no longer exists with its metadata, tags and service account (off by default). The
# service account also needs iam.serviceAccounts.actAs on that one account (roles/iam.serviceAccountUser
# granted on it): never granted here, since project-wide it would let restores act as any account.
resource "google_project_iam_custom_role" "restore_rebuild" {
  for_each = local.rebuild_projects

  project     = each.value
  role_id     = var.restore_rebuild_role_id
  title       = "GCE VM backup restore (rebuild settings)"
  description = "Give a rebuilt VM its metadata, network tags and service account. Managed by terraform."
  permissions = local.restore_rebuild_permissions
}

resource "google_project_iam_member" "restore_rebuild" {
  for_each = local.rebuild_projects

  project = each.value
  role    = google_project_iam_custom_role.restore_rebuild[each.value].id
  member  = "serviceAccount:${google_service_account.restore[0].email}"
}

# The environment's account may mint tokens for the restore account, on that one account only, never
# project-wide.
resource "google_service_account_iam_member" "composer_impersonates_restore" {
  count = var.enable_restore ? 1 : 0

  service_account_id = google_service_account.restore[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.composer.email}"
}

# The account drills run as (config key drill_service_account): it creates and deletes only in the scratch
# project, and only reads in the target projects.
resource "google_service_account" "drill" {
  count = local.drill_enabled ? 1 : 0

  project      = var.project_id
  account_id   = var.drill_service_account_id
  display_name = "gce-vm-backup restore drills (${var.environment_name})"
  description  = "Restores snapshot sets into the drill scratch project and deletes them again; reads only elsewhere. Impersonated by the Composer environment's account."
}

# The drill role, in the scratch project only.
resource "google_project_iam_custom_role" "drill" {
  count = local.drill_enabled ? 1 : 0

  project     = var.drill_scratch_project
  role_id     = var.drill_role_id
  title       = "GCE VM backup restore drill"
  description = "Create, boot-check and delete restore drill disks and VMs. Managed by terraform."
  permissions = local.drill_permissions

  lifecycle {
    precondition {
      condition     = !contains(tolist(local.target_projects), var.drill_scratch_project)
      error_message = "drill_scratch_project must not be a target project: a drill creates and deletes there."
    }
  }
}

resource "google_project_iam_member" "drill" {
  count = local.drill_enabled ? 1 : 0

  project = var.drill_scratch_project
  role    = google_project_iam_custom_role.drill[0].id
  member  = "serviceAccount:${google_service_account.drill[0].email}"
}

# The drill's read role, in each target project.
resource "google_project_iam_custom_role" "drill_read" {
  for_each = local.drill_projects

  project     = each.value
  role_id     = var.drill_read_role_id
  title       = "GCE VM backup restore drill (read)"
  description = "Read the VMs and snapshots a restore drill copies. Managed by terraform."
  permissions = local.drill_read_permissions
}

resource "google_project_iam_member" "drill_read" {
  for_each = local.drill_projects

  project = each.value
  role    = google_project_iam_custom_role.drill_read[each.value].id
  member  = "serviceAccount:${google_service_account.drill[0].email}"
}

resource "google_service_account_iam_member" "composer_impersonates_drill" {
  count = local.drill_enabled ? 1 : 0

  service_account_id = google_service_account.drill[0].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.composer.email}"
}
