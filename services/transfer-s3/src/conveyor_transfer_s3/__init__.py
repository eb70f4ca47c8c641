"""transfer-s3: delivers files to S3 destinations (server-side copy where possible)."""
