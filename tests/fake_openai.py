"""A fake OpenAI-compatible HTTP server for tests (answers, failures and delays scripted)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeServer:
    """An OpenAI-compatible server on 127.0.0.1: answers with ``respond(n, path, body)`` ->
    (status, headers, payload), records requests and the most requests in flight at once."""

    def __init__(self, respond=None, delay_s: float = 0.0):
        self.respond = respond or (lambda n, path, body: (200, {}, echo(path, body)))
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.handle_error = lambda request, address: None  # clients that timed out
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    n = len(server.requests)
                    server.requests.append(
                        {"path": self.path, "body": body, "headers": dict(self.headers)}
                    )
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s)
                    status, headers, payload = server.respond(n, self.path, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                for key, value in {"Content-Length": str(len(data)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler


def echo(path: str, body: dict) -> dict:
    if path.endswith("/chat/completions"):
        return {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": "chat:" + body["messages"][0]["content"],
                    }
                }
            ]
        }
    return {"choices": [{"text": "text:" + body["prompt"]}]}
