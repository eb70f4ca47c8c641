"""conveyor_transfer_sftp."""
