output "bucket_name" {
  description = "The environment's bucket; `vm-backup sync --bucket` takes it."
  value       = split("/", trimprefix(google_composer_environment.this.config[0].dag_gcs_prefix, "gs://"))[0]
}

output "dags_prefix" {
  description = "gs:// prefix that Composer reads DAGs from."
  value       = google_composer_environment.this.config[0].dag_gcs_prefix
}

output "airflow_uri" {
  description = "URL of the Airflow UI (the trigger form lives here)."
  value       = google_composer_environment.this.config[0].airflow_uri
}

output "service_account_email" {
  description = "The dedicated service account the environment runs as."
  value       = google_service_account.composer.email
}

output "restore_service_account_email" {
  description = "The restore service account (the restore DAGs' impersonation_chain), or null when enable_restore is false."
  value       = var.enable_restore ? google_service_account.restore[0].email : null
}

output "drill_service_account_email" {
  description = "The drill service account (the drill DAGs' impersonation_chain), or null without enable_restore and drill_scratch_project."
  value       = local.drill_enabled ? google_service_account.drill[0].email : null
}
