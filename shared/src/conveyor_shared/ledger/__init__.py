"""The DynamoDB ledger: files, jobs and leases. Conditional writes only."""

from conveyor_shared.ledger.files import FileLedger
from conveyor_shared.ledger.jobs import JobLedger
from conveyor_shared.ledger.locks import Leases
from conveyor_shared.ledger.models import FileEntry, FileStatus, Job, JobStatus

__all__ = ["FileEntry", "FileLedger", "FileStatus", "Job", "JobLedger", "JobStatus", "Leases"]
