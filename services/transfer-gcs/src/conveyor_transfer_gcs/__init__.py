"""transfer-gcs: delivers files to Google Cloud Storage (resumable uploads)."""
