"""`manage.py run_sandbox`: the sandbox insurer, every protocol face in one process.

Each face is a starter in `SERVER_STARTERS`: a function taking the command's options and
returning an object with `stop()`. The REST face is uvicorn serving
`insurers.sandbox.rest:application`; SOAP and SFTP faces add their starters here. The
process prints one `ready` line (JSON, with each face's URL) when every face answers, and
stops them all on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand

from insurers.sandbox.sftp_server import sftp_start
from insurers.sandbox.soap_service import soap_start


class _UvicornFace:
    def __init__(self, app: str, host: str, port: int):
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"sandbox-{port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"sandbox face on port {port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def rest_start(options: dict) -> tuple[str, object]:
    face = _UvicornFace("insurers.sandbox.rest:application", options["host"], options["rest_port"])
    return f"http://{options['host']}:{options['rest_port']}", face


# name -> starter; the SOAP and SFTP faces register theirs beside REST.
SERVER_STARTERS = {"rest": rest_start, "soap": soap_start, "sftp": sftp_start}


class Command(BaseCommand):
    help = "Run the sandbox insurer (REST, SOAP, SFTP) on loopback."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=settings.SANDBOX_HOST)
        parser.add_argument("--rest-port", type=int, default=settings.SANDBOX_REST_PORT)
        parser.add_argument("--soap-port", type=int, default=settings.SANDBOX_SOAP_PORT)
        parser.add_argument("--sftp-port", type=int, default=settings.SANDBOX_SFTP_PORT)
        parser.add_argument("--data-dir", default=str(settings.SANDBOX_DATA_DIR))
        parser.add_argument("--faces", default=",".join(SERVER_STARTERS), help="comma-separated faces to run")

    def handle(self, *args, **options) -> None:
        os.environ["SANDBOX_DATA_DIR"] = options["data_dir"]  # the engine reads its folder from here
        os.environ.setdefault("SANDBOX_REST_TOKEN", settings.SANDBOX_REST_TOKEN)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        faces, urls = [], {}
        try:
            for name in [face for face in options["faces"].split(",") if face]:
                url, face = SERVER_STARTERS[name](options)
                faces.append(face)
                urls[name] = url
            self.stdout.write(json.dumps({"ready": True, "faces": urls}))
            self.stdout.flush()
            stop.wait()
        finally:
            for face in reversed(faces):
                face.stop()
