"""conveyor_transfer_gcs."""
