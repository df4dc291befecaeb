"""SFTP adapter: dispatch files up, response files down, over paramiko.

Host keys are checked strictly: the only keys trusted are the insurer's
`connection["known_hosts"]` lines (OpenSSH format); an unknown or changed key is refused
(`RejectPolicy`, nothing is ever added) and the call fails permanently, since a retry
cannot fix it and ops must look. Auth is a private key (`credentials["private_key"]`,
PEM or OpenSSH text) or a password (`credentials["password"]`).

- `send` writes the dispatch (CSV by the insurer's template, or X12 834) as
  `<inbox>/<dispatch key>.<csv|834>`: it is uploaded under `.<name>.part` and renamed, so
  the insurer never sees half a file under the final name. Results are pending: the
  insurer answers with a response file.
- `confirmations_fetch` claims each response file in `<outbox>` by renaming it into
  `<archive>`: a rename succeeds once, so a file picked up by two fetchers at the same
  time is read by one of them only.
- `status_fetch` reads (without claiming) the response files in outbox and archive for
  the asked references; `roster_fetch`/`statement_fetch` read the insurer's report files.

Every call is bounded: the TCP connect, banner, auth and each SFTP request time out after
the insurer's `request_timeout_seconds`; timeouts and connection errors are transient.
"""

import io
import posixpath
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from urllib.parse import urlsplit

import paramiko

from insurers.adapters.base import PENDING, ItemResult, PermanentError, TransientError, item_result_from
from insurers.exchanges import exchange_record
from insurers.formats import csv_template, x12_834


def _host_keys(known_hosts: str) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    for line in known_hosts.splitlines():
        entry = (
            paramiko.hostkeys.HostKeyEntry.from_line(line)
            if line.strip() and not line.startswith("#")
            else None
        )
        if entry is not None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return keys


def _private_key(text: str, passphrase: str | None) -> paramiko.PKey:
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.SSHException:
            continue
    raise PermanentError("the configured private key cannot be read", code="sftp_private_key_invalid")


def _item_result(row: dict) -> ItemResult:
    data = {key: row[key] for key in ("effective_date", "sum_insured") if row.get(key)}
    return item_result_from({**row, "outcome": row.get("outcome", "").lower(), "data": data})


class SftpSite:
    """One insurer's SFTP site: where it is, how to log in, its folders."""

    def __init__(self, insurer):
        self.insurer = insurer
        self.connection = insurer.connection or {}
        location = urlsplit(insurer.endpoint_url)
        self.host, self.port = location.hostname or "127.0.0.1", location.port or 22
        self.username = location.username or (insurer.credentials or {}).get("username", "")
        self.base = location.path or "/"
        self.timeout = float(insurer.request_timeout_seconds)

    def folder(self, name: str) -> str:
        return posixpath.join(self.base, self.connection.get(f"{name}_folder", name))

    @contextmanager
    def session(self) -> Iterator[paramiko.SFTPClient]:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        trusted = client.get_host_keys()
        for name, keys in _host_keys(self.connection.get("known_hosts", "")).items():
            for key_type, key in keys.items():
                trusted.add(name, key_type, key)
        credentials = self.insurer.credentials or {}
        pkey = None
        if credentials.get("private_key"):
            pkey = _private_key(credentials["private_key"], credentials.get("private_key_passphrase"))
        where = f"{self.host}:{self.port}"
        try:
            # our own socket, so Nagle's algorithm does not stall the handshake's small packets
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(
                self.host,
                port=self.port,
                sock=sock,
                username=self.username,
                password=None if pkey else credentials.get("password"),
                pkey=pkey,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
                look_for_keys=False,
                allow_agent=False,
            )
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(self.timeout)
            yield sftp
        except paramiko.BadHostKeyException as exc:
            raise PermanentError(f"the host key of {where} changed", code="sftp_host_key_changed") from exc
        except paramiko.AuthenticationException as exc:
            raise PermanentError("the insurer refused our credentials", code="sftp_auth_failed") from exc
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise PermanentError(f"{where} is not a known host", code="sftp_host_key_unknown") from exc
            raise TransientError(str(exc), code="sftp_protocol_error") from exc
        except TimeoutError as exc:
            raise TransientError(f"no answer within {self.timeout:g} s", code="sftp_timeout") from exc
        except (OSError, EOFError) as exc:
            raise TransientError(f"{where}: {exc}", code="sftp_connection_error") from exc
        finally:
            client.close()

    def read(self, sftp: paramiko.SFTPClient, path: str) -> str:
        with sftp.open(path, "rb") as remote:
            remote.prefetch()
            return remote.read().decode("utf-8")

    def responses(self, text: str) -> list[ItemResult]:
        columns = self.connection.get("response_columns") or csv_template.RESPONSE_COLUMNS
        return [_item_result(row) for row in csv_template.document_read(text=text, columns=columns)]

    def report(self, name: str) -> list[dict]:
        started = time.monotonic()
        with self.session() as sftp:
            text = self.read(sftp, posixpath.join(self.folder("reports"), name))
        headers = next(iter(text.splitlines()), "")
        rows = (
            csv_template.document_read(text=text, columns=[[h, h] for h in headers.split(",")])
            if headers
            else []
        )
        exchange_record(
            insurer=self.insurer,
            operation=f"report {name}",
            request=None,
            response={"file": name, "rows": rows},
            status="ok",
            started=started,
            direction="inbound",
        )
        return rows


def dispatch_file(insurer, dispatch, items: Sequence) -> tuple[str, str]:
    """(file name, content) for a dispatch, the same bytes on every retry."""
    connection = insurer.connection or {}
    payloads = [{**item.payload, "item_key": item.idempotency_key} for item in items]
    if connection.get("file_format", "csv") == "x12_834":
        body = x12_834.document_write(
            items=payloads,
            dispatch_key=dispatch.idempotency_key,
            created_at=dispatch.created_at,
            parties=x12_834.Parties(**connection.get("x12", {})),
        )
        return f"{dispatch.idempotency_key}.834", body
    columns = connection.get("csv_columns") or csv_template.DISPATCH_COLUMNS
    return f"{dispatch.idempotency_key}.csv", csv_template.document_write(rows=payloads, columns=columns)


def upload(sftp: paramiko.SFTPClient, folder: str, name: str, body: str) -> str:
    """Write under a dot-name, then rename: the final name only ever holds a whole file."""
    staging, final = posixpath.join(folder, f".{name}.part"), posixpath.join(folder, name)
    try:
        with sftp.open(staging, "wb") as remote:
            remote.set_pipelined(True)
            remote.write(body.encode("utf-8"))
        sftp.posix_rename(staging, final)
    except BaseException:
        try:
            sftp.remove(staging)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the connection is gone; the insurer ignores dot-files
        raise
    return final


class SftpAdapter:
    def send(self, dispatch, items: Sequence) -> list[ItemResult]:
        remote = SftpSite(dispatch.insurer)
        name, body = dispatch_file(dispatch.insurer, dispatch, items)
        references = [item.reference for item in items]
        started, status = time.monotonic(), "ok"
        try:
            with remote.session() as sftp:
                upload(sftp, remote.folder("inbox"), name, body)
        except (TransientError, PermanentError) as exc:
            status = exc.code
            raise
        finally:
            exchange_record(
                insurer=dispatch.insurer,
                operation="upload",
                request={
                    "file": name,
                    "bytes": len(body.encode()),
                    "items": [item.payload for item in items],
                },
                response=None,
                status=status,
                started=started,
                dispatch_key=dispatch.idempotency_key,
                dispatch_id=dispatch.pk,
                tracking_ids=references,
            )
        return [ItemResult(reference=reference, outcome=PENDING) for reference in references]

    def confirmations_fetch(self, insurer) -> list[ItemResult]:
        remote = SftpSite(insurer)
        results: list[ItemResult] = []
        outbox, archive = remote.folder("outbox"), remote.folder("archive")
        with remote.session() as sftp:
            for name in sorted(sftp.listdir(outbox)):
                if name.startswith("."):
                    continue
                claimed = posixpath.join(archive, f"{time.strftime('%Y%m%dT%H%M%S')}-{name}")
                started = time.monotonic()
                try:
                    sftp.rename(posixpath.join(outbox, name), claimed)
                except OSError:
                    continue  # another fetcher claimed it first
                found = remote.responses(remote.read(sftp, claimed))
                exchange_record(
                    insurer=insurer,
                    operation="response file",
                    request=None,
                    response={"file": name, "archived_as": claimed, "results": [vars(r) for r in found]},
                    status="ok",
                    started=started,
                    tracking_ids=[result.reference for result in found],
                    direction="inbound",
                )
                results += found
        return results

    def status_fetch(self, insurer, references: Sequence[str]) -> list[ItemResult]:
        remote = SftpSite(insurer)
        wanted, latest = set(references), {}
        with remote.session() as sftp:
            for folder in (remote.folder("archive"), remote.folder("outbox")):
                entries = sorted(sftp.listdir_attr(folder), key=lambda entry: entry.st_mtime or 0)
                for entry in entries:
                    if entry.filename.startswith("."):
                        continue
                    for result in remote.responses(remote.read(sftp, posixpath.join(folder, entry.filename))):
                        if result.reference in wanted:
                            latest[result.reference] = result
        return [latest[reference] for reference in references if reference in latest]

    def roster_fetch(self, insurer) -> list[dict]:
        return SftpSite(insurer).report("roster.csv")

    def statement_fetch(self, insurer, period_start: date, period_end: date) -> list[dict]:
        rows = SftpSite(insurer).report(f"statement-{period_start:%Y%m%d}-{period_end:%Y%m%d}.csv")
        for row in rows:
            for key in ("amount", "balance"):
                if row.get(key, "").lstrip("-").isdigit():
                    row[key] = int(row[key])
        return rows
