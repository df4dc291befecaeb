"""The sandbox insurer's SFTP server: paramiko's server interface on a loopback port.

A real SSH server (key exchange, host key, password or public-key auth, the SFTP
subsystem) over one folder, chroot-like: paths never leave `root`. Layout:

- `inbox/`   EMS uploads dispatch files here (`<dispatch key>.csv` or `.834`); a file is
  taken once it is renamed to a name not starting with "." (the client's atomic upload);
- `outbox/`  response files the sandbox writes (`<dispatch key>.response.csv`, itself
  written under a dot-name and renamed, so EMS never reads half a file);
- `archive/` where EMS moves the response files it has read;
- `rejected/` dispatch files the sandbox could not read (kept for a person to look at);
- `reports/roster.csv` and `reports/statement-<YYYYMMDD>-<YYYYMMDD>.csv` are produced
  by the engine when opened (the insurer's published reports).

Processing runs on a worker thread fed by renames, so an upload returns at once, as
with a real insurer's batch pickup. The switches' latency is paid by each connection
before the handshake; their faults act per connection too: "error" and "throttle" drop
it, "timeout" holds it silent. The host key is generated on first start and kept in the
data folder with a `known_hosts` line for EMS's insurer settings.
"""

import errno
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import paramiko

from insurers.formats import csv_template, x12_834

log = logging.getLogger(__name__)

HOST_KEY_FILE = "sftp_host_key"
KNOWN_HOSTS_FILE = "known_hosts"
FOLDERS = ("inbox", "outbox", "archive", "reports", "rejected")
# The sandbox insurer's own CSV layout (what a newcomer configures as `csv_columns`).
SANDBOX_CSV_COLUMNS = [[field.upper(), field] for _, field in csv_template.DISPATCH_COLUMNS]


def host_key_load(data_dir: Path) -> paramiko.PKey:
    path = data_dir / HOST_KEY_FILE
    if not path.exists():
        paramiko.ECDSAKey.generate(bits=256).write_private_key_file(str(path))
    return paramiko.ECDSAKey.from_private_key_file(str(path))


def known_hosts_line(*, host: str, port: int, key: paramiko.PKey) -> str:
    """The OpenSSH known_hosts line for this server (`[host]:port type base64`)."""
    return f"[{host}]:{port} {key.get_name()} {key.get_base64()}"


class _Auth(paramiko.ServerInterface):
    def __init__(self, *, username: str, password: str, authorized_keys: list[paramiko.PKey]):
        self.username, self.password, self.authorized_keys = username, password, authorized_keys

    def check_auth_password(self, username, password):
        if username == self.username and self.password and password == self.password:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_auth_publickey(self, username, key):
        if username == self.username and any(key == known for known in self.authorized_keys):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def get_allowed_auths(self, username):
        return "password,publickey"

    def check_channel_request(self, kind, chanid):
        return (
            paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        )


class _Handle(paramiko.SFTPHandle):
    def stat(self):
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))


def _day(text: str) -> date:
    return datetime.strptime(text, "%Y%m%d").date()


def _error(exc: OSError) -> int:
    return paramiko.SFTPServer.convert_errno(exc.errno)


class _Folder(paramiko.SFTPServerInterface):
    """Files under one root; the server object carries the root, engine and pickup queue."""

    def __init__(self, server, *args, sandbox: "SftpSandbox", **kwargs):
        super().__init__(server, *args, **kwargs)
        self.sandbox = sandbox

    def _path(self, path: str) -> Path:
        root = self.sandbox.root
        resolved = (root / self.canonicalize(path).lstrip("/")).resolve()
        if resolved != root and root not in resolved.parents:
            raise PermissionError(errno.EACCES, "outside the sandbox folder")
        return resolved

    def list_folder(self, path):
        try:
            folder = self._path(path)
            return [
                paramiko.SFTPAttributes.from_stat(entry.stat(), entry.name) for entry in os.scandir(folder)
            ]
        except OSError as exc:
            return _error(exc)

    def stat(self, path):
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._path(path)))
        except OSError as exc:
            return _error(exc)

    lstat = stat

    def open(self, path, flags, attr):
        try:
            target = self._path(path)
            self.sandbox.report_render(target)
            fd = os.open(target, flags | getattr(os, "O_BINARY", 0), 0o640)
            if flags & os.O_WRONLY:
                mode = "ab" if flags & os.O_APPEND else "wb"
            elif flags & os.O_RDWR:
                mode = "a+b" if flags & os.O_APPEND else "r+b"
            else:
                mode = "rb"
            handle = _Handle(flags)
            handle.readfile = handle.writefile = os.fdopen(fd, mode)
            return handle
        except OSError as exc:
            return _error(exc)

    def remove(self, path):
        try:
            os.remove(self._path(path))
            return paramiko.SFTP_OK
        except OSError as exc:
            return _error(exc)

    def rename(self, oldpath, newpath):
        try:
            source, target = self._path(oldpath), self._path(newpath)
            if target.exists():
                return paramiko.SFTP_FAILURE  # plain SFTP rename never overwrites
            os.rename(source, target)
        except OSError as exc:
            return _error(exc)
        self.sandbox.uploaded(target)
        return paramiko.SFTP_OK

    def posix_rename(self, oldpath, newpath):
        try:
            target = self._path(newpath)
            os.replace(self._path(oldpath), target)
        except OSError as exc:
            return _error(exc)
        self.sandbox.uploaded(target)
        return paramiko.SFTP_OK

    def mkdir(self, path, attr):
        try:
            os.mkdir(self._path(path))
            return paramiko.SFTP_OK
        except OSError as exc:
            return _error(exc)

    def rmdir(self, path):
        try:
            os.rmdir(self._path(path))
            return paramiko.SFTP_OK
        except OSError as exc:
            return _error(exc)


class SftpSandbox:
    """Accepts SSH connections on `port` and processes inbox files through `engine`."""

    def __init__(
        self,
        *,
        root: Path,
        data_dir: Path,
        port: int,
        username: str,
        password: str,
        engine,
        host: str = "127.0.0.1",
        authorized_keys: list[paramiko.PKey] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ):
        self.root = root.resolve()
        self.engine = engine
        self.host, self.port = host, port
        self.auth = _Auth(username=username, password=password, authorized_keys=authorized_keys or [])
        self.host_key = host_key_load(data_dir)
        (data_dir / KNOWN_HOSTS_FILE).write_text(
            known_hosts_line(host=host, port=port, key=self.host_key) + "\n"
        )
        for folder in FOLDERS:
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self.pickups: queue.Queue[Path] = queue.Queue()
        self.on_error = on_error or (lambda exc: log.exception("sandbox sftp processing failed"))

    # --- serving ------------------------------------------------------------------
    def start(self) -> None:
        """Listen now; serve connections and process uploads on daemon threads."""
        self.listener = socket.create_server((self.host, self.port))
        self.listener.listen(64)
        for path in sorted((self.root / "inbox").iterdir()):
            self.uploaded(path)  # files left by a previous run
        threading.Thread(target=self._process_forever, name="sandbox-sftp-pickup", daemon=True).start()
        threading.Thread(target=self._accept_forever, name=f"sandbox-sftp-{self.port}", daemon=True).start()

    def stop(self) -> None:
        self.listener.close()

    def _accept_forever(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # stopped
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms Nagle stalls
            threading.Thread(target=self._session, args=(connection,), daemon=True).start()

    def _session(self, connection: socket.socket) -> None:
        switches = self.engine.switches_get()
        time.sleep(int(switches["latency_ms"]) / 1000)  # every call pays it, as over a real network
        fault = self.engine.fault_pick(switches)
        if fault in ("error", "throttle"):
            connection.close()  # the insurer's server drops the connection
            return
        if fault == "timeout":
            time.sleep(float(switches["timeout_seconds"]))  # accepts, then says nothing
            connection.close()
            return
        transport = paramiko.Transport(connection)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _Folder, sandbox=self)
        try:
            transport.start_server(server=self.auth)
            transport.join()
        except (paramiko.SSHException, EOFError, OSError):
            log.info("sandbox sftp session ended abruptly")
        finally:
            transport.close()

    # --- the insurer's side -------------------------------------------------------
    def uploaded(self, path: Path) -> None:
        if path.parent == self.root / "inbox" and path.is_file() and not path.name.startswith("."):
            self.pickups.put(path)

    def _process_forever(self) -> None:
        while True:
            path = self.pickups.get()
            try:
                self.process(path)
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the pickup thread
                self.on_error(exc)
                if path.exists():
                    os.replace(path, self.root / "rejected" / path.name)  # as an insurer's ops would

    def process(self, path: Path) -> None:
        """Read one dispatch file, let the engine decide, write the response file."""
        if not path.exists():
            return
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".834":
            items = x12_834.document_read(text)
        else:
            items = csv_template.document_read(text=text, columns=SANDBOX_CSV_COLUMNS)
        dispatch_key = path.name.rsplit(".", 1)[0]
        results = self.engine.receive(items, dispatch_key)
        self.outbox_write(f"{dispatch_key}.response.csv", results)
        path.unlink()

    def outbox_write(self, name: str, results: list[dict]) -> None:
        rows = [{**result, **(result.get("data") or {})} for result in results]
        body = csv_template.document_write(rows=rows, columns=csv_template.RESPONSE_COLUMNS)
        staging = self.root / "outbox" / f".{name}.part"
        staging.write_text(body, encoding="utf-8")
        os.replace(staging, self.root / "outbox" / name)

    def report_render(self, target: Path) -> None:
        """Write a report file just before it is opened (roster, statement for a period)."""
        if target.parent != self.root / "reports":
            return
        if target.name == "roster.csv":
            rows = self.engine.roster()
        elif target.name.startswith("statement-") and target.suffix == ".csv":
            start, end = target.stem.removeprefix("statement-").split("-")
            rows = self.engine.statement(_day(start), _day(end))
        else:
            return
        columns = [[key, key] for key in (rows[0].keys() if rows else ())]
        staging = target.with_name(f".{target.name}.part")
        staging.write_text(csv_template.document_write(rows=rows, columns=columns), encoding="utf-8")
        os.replace(staging, target)


def sftp_start(options: dict) -> tuple[str, SftpSandbox]:
    """`run_sandbox`'s starter: the SFTP face over the engine, its folder in the data dir."""
    from urllib.parse import urlsplit

    from django.conf import settings

    from insurers.sandbox import engine

    data_dir = Path(options["data_dir"])
    data_dir.mkdir(parents=True, exist_ok=True)
    face = SftpSandbox(
        root=data_dir / "sftp",
        data_dir=data_dir,
        host=options["host"],
        port=options["sftp_port"],
        username=urlsplit(settings.SANDBOX_SFTP_URL).username or "sandbox",
        password=settings.SANDBOX_SFTP_PASSWORD,
        engine=engine,
    )
    face.start()
    return f"sftp://sandbox@{options['host']}:{options['sftp_port']}/", face
