"""Conveyor against ``rclone copy`` and the physical limit, on the same endpoints.

``uv run python -m bench`` starts its own stand-ins (moto, OpenSSH's sshd, the
GCS emulator) on free 127.0.0.1 ports, deploys ``deploy/conveyor.yaml`` into
moto, and measures, side by side:

* ``sftp``: a 1 GiB file from S3 to sshd, Conveyor's transfer-sftp with and
  without verification against ``rclone copy`` with and without
  ``--sftp-disable-hashcheck``, and OpenSSH's own ``sftp`` putting a local file
  (the raw limit of the endpoint);
* ``gcs``: a 1 GiB file from S3 to the GCS emulator;
* ``s3``: a 1 GiB file from S3 to another bucket, proving the worker moves
  no payload when it can copy server-side;
* ``small``: 500 files of 64 KiB from an upload into the pick-up to the last
  ``success`` in the ledger, through the whole pipeline (S3 event, scanner,
  queue, transfer-sftp, ledger), verified and unverified, each leg on emptied
  ledger tables, with the services' CPU per file and the AWS requests per file
  and their cost (moto's request log; ``bench.requests`` has the same count
  with the notifier, per service and operation); ``--profile`` adds py-spy's
  top functions of the scanner and the worker;
* ``latency``: 100 small files put 0.2 s apart, each file's arrival to
  delivery (p50, p99) cut into its phases, and the share of the scanner's
  wait (``bench.latency``).

Each Conveyor leg runs a real transfer service as its own process; its peak
RSS, CPU time and bytes read/written are the worker's own. The figures are
printed as one JSON object (see ``docs/benchmarks.md``).
"""
