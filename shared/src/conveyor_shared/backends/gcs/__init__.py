"""Google Cloud Storage as a Destination, written with GCS's resumable-upload
protocol by a chunk loop of our own.

* ``begin`` starts an upload session (``POST ...?uploadType=resumable``); a
  404 there means the bucket does not exist.
* ``write`` cuts the stream into chunks of ``chunk_size`` bytes (a multiple of
  256 KiB) and sends each with ``PUT`` and ``Content-Range: bytes a-b/*``.
  GCS answers 308 and its ``Range`` header says how much it has committed.
  When the size was declared, a chunk that cannot be the last is streamed to
  GCS while ``copy()`` is still reading it, so reading and uploading overlap;
  otherwise a chunk is sent once the next byte proves it is not the last.
  Either way only the current chunk is held in memory, as the caller's own
  buffers, until GCS acknowledges it.
* ``commit`` sends the rest with the total (``bytes a-b/total``); only then
  does GCS create the object, atomically, and return its metadata with
  ``md5Hash`` and ``crc32c``.
* A dropped connection, a timeout, 408, 429 or 5xx: ask the session how much
  it committed (``Content-Range: bytes */*``) and resend the rest of the chunk
  from memory, with back-off; never from zero.
* ``abort`` cancels the session (``DELETE``) and never raises.

Against the emulator (``STORAGE_EMULATOR_HOST``) no token is sent. The session
URI is itself a credential (whoever holds it may upload), so it never reaches
a log line or an error message, and neither does the access token.
"""

from conveyor_shared.backends.gcs.client import CHUNK_QUANTUM, GcsClient
from conveyor_shared.backends.gcs.factory import GcsDestinationFactory
from conveyor_shared.backends.gcs.store import GcsStore
from conveyor_shared.backends.gcs.upload import GcsUpload

__all__ = ["CHUNK_QUANTUM", "GcsClient", "GcsDestinationFactory", "GcsStore", "GcsUpload"]
