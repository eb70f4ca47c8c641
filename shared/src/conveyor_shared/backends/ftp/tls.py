"""FTPS: how the server's certificate is trusted (the system CAs, a CA bundle
from the secret, or a pinned SHA-256 fingerprint), and TLS session reuse on
data connections.

vsftpd (``require_ssl_reuse=YES``, its default) and proftpd's mod_tls refuse
a data connection that does not resume the control connection's TLS
session, so each data connection is wrapped with the control connection's
``SSLSession``: asyncio's ``start_tls`` takes no ``session``, but it calls
the context's ``wrap_bio``, and aioftp's ``SSLSessionBoundContext`` passes
the session there. Under TLS 1.3 the session is only known once the
server's ticket arrived after the handshake, which happens while the login
replies are read, before any data connection opens: vsftpd 3.0.3 and
proftpd 1.3.8 (OpenSSL 3) resume it under TLS 1.3, so data connections need
no cap at TLS 1.2. pure-ftpd neither resumes nor requires it.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl

from aioftp.common import SSLSessionBoundContext

from conveyor_shared.backends.ftp.settings import FtpCredentials, FtpSettings
from conveyor_shared.errors import Misconfigured, PermanentError


def client_context(settings: FtpSettings, credentials: FtpCredentials) -> ssl.SSLContext:
    """The control connection's context; raises ``Misconfigured`` for a
    ``ca_bundle`` that holds no PEM certificate (its text is never echoed)."""
    try:
        context = ssl.create_default_context(cadata=credentials.ca_bundle or None)
    except (ssl.SSLError, ValueError):
        raise Misconfigured(
            "the ca_bundle in the FTP secret is not a PEM certificate bundle"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.fingerprint:
        # Pinned: the fingerprint is the trust, checked after the handshake.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_fingerprint(ssl_object: ssl.SSLObject | None, expected: str, address: str) -> None:
    """Raise ``PermanentError`` unless the peer's certificate has SHA-256 ``expected``."""
    certificate = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    if not certificate:
        raise PermanentError(f"{address} presented no TLS certificate to check the fingerprint")
    actual = hashlib.sha256(certificate).hexdigest()
    if not hmac.compare_digest(actual, expected):
        raise PermanentError(
            f"the TLS certificate of {address} has SHA-256 {actual}, "
            f"not the route's fingerprint {expected}"
        )


def resuming_context(control: ssl.SSLObject) -> ssl.SSLContext:
    """A context whose connections resume ``control``'s TLS session."""
    if control.session is None:
        return control.context
    return SSLSessionBoundContext(
        ssl.PROTOCOL_TLS_CLIENT, context=control.context, session=control.session
    )
