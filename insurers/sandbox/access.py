"""How an insurer configured in EMS reaches this machine's sandbox insurer, by protocol.

The endpoint, the credentials the sandbox lets in, and (SFTP) the host key to trust and
the CSV layout; `seed_demo` points its demo insurers here on every run, and tests and
benchmarks can configure an insurer the same way.
"""

from django.conf import settings

from insurers.models import Insurer
from insurers.sandbox import sftp_server


def sandbox_endpoint(protocol: str) -> str:
    return {
        Insurer.Protocol.REST: settings.SANDBOX_BASE_URL,
        Insurer.Protocol.SOAP: settings.SANDBOX_SOAP_URL,
        Insurer.Protocol.SFTP: settings.SANDBOX_SFTP_URL,
    }[protocol]


def sandbox_credentials(protocol: str) -> dict:
    """REST: the bearer token; SFTP: the password; SOAP: none unless the sandbox requires WS-Security."""
    if protocol == Insurer.Protocol.SFTP:
        return {"password": settings.SANDBOX_SFTP_PASSWORD}
    return {"bearer_token": settings.SANDBOX_REST_TOKEN} if protocol == Insurer.Protocol.REST else {}


def sandbox_connection(protocol: str) -> dict:
    """SFTP: the sandbox's host key to trust and its CSV layout."""
    if protocol != Insurer.Protocol.SFTP:
        return {}
    return sftp_server.insurer_connection(
        data_dir=settings.SANDBOX_DATA_DIR, host=settings.SANDBOX_HOST, port=settings.SANDBOX_SFTP_PORT
    )
