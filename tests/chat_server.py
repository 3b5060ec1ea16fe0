"""A local HTTP server that speaks the OpenAI chat-completions protocol, for protocol tests.

It is not a model: it answers with the smallest instance of the requested JSON Schema (or with
scripted failures), so tests can check what the backend sends and how it handles what comes back.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def smallest_instance(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "object":
        return {key: smallest_instance(value) for key, value in schema["properties"].items()}
    if kind == "array":
        return [smallest_instance(schema["items"]) for _ in range(max(schema.get("minItems", 0), 1))]
    if kind == "string":
        return "a sound"[: schema.get("maxLength", 7)]
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    raise ValueError(f"unsupported schema node {schema}")


class ChatServer:
    """Start with `with ChatServer() as server:`; `server.url` is the base URL ending in /v1.

    `script` is a queue of behaviours for the next requests: "ok" (schema instance), "503", "400",
    "garbage" (prose without JSON), "drop" (close the connection). When empty, every answer is "ok".
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.script: deque[str] = deque()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    action = server.script.popleft() if server.script else "ok"
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if action == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return None
                if action in ("503", "400"):
                    return self._send(int(action), {"error": {"message": f"scripted {action}"}})
                if action == "garbage":
                    content = "I think the video shows something, but I am not sure what."
                else:
                    schema = body.get("response_format", {}).get("json_schema", {}).get("schema")
                    content = json.dumps(smallest_instance(schema)) if schema else '{"note": "no schema"}'
                return self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content},
                            }
                        ],
                        "usage": {
                            "prompt_tokens": 10,
                            "completion_tokens": len(content) // 4,
                            "total_tokens": 20,
                        },
                    },
                )

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
