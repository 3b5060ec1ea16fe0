"""A local HTTP server that speaks the OpenAI chat-completions protocol, for protocol tests.

It is not a model: it answers with the smallest instance of the requested JSON Schema (or with
scripted failures), so tests can check what the backend sends and how it handles what comes back.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from typing import Any

from tests.http_stub import JSONHandler, StubServer


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


class ChatServer(StubServer):
    """Start with `with ChatServer() as server:`; `server.url` is the base URL ending in /v1.

    `script` is a queue of behaviours for the next requests: "ok" (schema instance), "503", "400",
    "garbage" (prose without JSON), "drop" (close the connection). When empty, every answer is "ok".
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.script: deque[str] = deque()
        self.lock = threading.Lock()
        super().__init__()

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def handler(self):
        server = self

        class Handler(JSONHandler):
            def do_POST(self) -> None:
                body = json.loads(self.read_body())
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    action = server.script.popleft() if server.script else "ok"
                if self.path != "/v1/chat/completions":
                    return self.send_json(404, {"error": {"message": f"no route {self.path}"}})
                if action == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return None
                if action in ("503", "400"):
                    return self.send_json(int(action), {"error": {"message": f"scripted {action}"}})
                if action == "garbage":
                    content = "I think the video shows something, but I am not sure what."
                else:
                    schema = body.get("response_format", {}).get("json_schema", {}).get("schema")
                    content = json.dumps(smallest_instance(schema)) if schema else '{"note": "no schema"}'
                return self.send_json(
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

        return Handler
