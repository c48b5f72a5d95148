"""A real HTTP receiver for webhook tests: a stdlib threading server on a free port that
records every request and answers what the test tells it to (a status, headers)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class WebhookReceiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answer = Answer()
        self.answers: dict[str, Answer] = {}  # by path, before the default
        # Requests to these paths get no answer until the event is set (timeouts).
        self.held: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    answer = receiver.answers.get(self.path, receiver.answer)
                    hold = receiver.held.get(self.path)
                if hold is not None:
                    hold.wait(timeout=30)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def respond(self, status: int, path: str | None = None, **headers: str) -> None:
        with self._lock:
            if path is None:
                self.answer = Answer(status, headers)
            else:
                self.answers[path] = Answer(status, headers)

    def hold(self, path: str) -> threading.Event:
        release = threading.Event()
        with self._lock:
            self.held[path] = release
        return release

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        for release in self.held.values():
            release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def running_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
