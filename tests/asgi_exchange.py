"""One HTTP exchange with the ASGI application (`ems.asgi`: development, tests, the websocket server)."""

from asgiref.testing import ApplicationCommunicator


async def asgi_exchange(
    method: str, path: str, body: bytes = b"", headers: dict | None = None, *, application=None
):
    """(status, headers with lower-case names, body) of one request to `ems.asgi.application`
    (or to the `application` given)."""
    if application is None:
        from ems.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        + [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await communicator.receive_output(10)
    content = b""
    while True:
        message = await communicator.receive_output(10)
        content += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(10)
    return start["status"], {k.lower(): v for k, v in start["headers"]}, content
