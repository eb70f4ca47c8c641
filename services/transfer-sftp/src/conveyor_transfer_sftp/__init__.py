"""transfer-sftp: delivers files to SFTP servers (temporary name, then an atomic rename)."""
