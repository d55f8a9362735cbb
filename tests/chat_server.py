"""A small Chat Completions server on loopback for tests of the real ``openai`` client.

``ChatServer(reply)`` serves ``POST /v1/chat/completions``; ``reply(request, n)`` gets the
request's JSON and the call number (0, 1, …) and returns ``(status, body, headers,
delay_s)``; a ``str`` or ``bytes`` body is sent as it is (``content-type`` from the headers,
default ``text/html``), to play a broken server. Helpers build the usual bodies. Every request (JSON and headers) is kept in
``server.requests``.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(content: str, prompt_tokens: int = 100, completion_tokens: int = 5) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "test-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def error(status: int, message: str) -> dict:
    return {"error": {"message": message, "type": "test_error", "code": status}}


class ChatServer:
    def __init__(self, reply) -> None:
        self.reply = reply
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    n = len(server.requests)
                    server.requests.append(
                        {
                            "path": self.path,
                            "json": body,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                        }
                    )
                if self.path.rstrip("/") != "/v1/chat/completions":
                    status, payload, headers, delay = 404, error(404, "not found"), {}, 0.0
                else:
                    status, payload, headers, delay = server.reply(body, n)
                if delay:
                    time.sleep(delay)
                headers = dict(headers)
                if isinstance(payload, str | bytes):  # a raw body: a broken or non-JSON response
                    data = payload.encode() if isinstance(payload, str) else payload
                    content_type = headers.pop("content-type", "text/html")
                else:
                    data, content_type = json.dumps(payload).encode(), "application/json"
                try:
                    self.send_response(status)
                    self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
