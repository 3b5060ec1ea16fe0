"""A local HTTP server that stands in for the Hugging Face Hub's repo and commit API: a protocol test
peer, not the Hub. It records every request and keeps the committed files in memory."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubServer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.repos: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}
        self.commits: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, payload: object) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                hub.requests.append(("GET", self.path, dict(self.headers)))
                self._send(404, {"error": f"not served: {self.path}"})

            def do_POST(self) -> None:
                body = self._body()
                hub.requests.append(("POST", self.path, dict(self.headers)))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    spec = json.loads(body)
                    repo_id = f"{spec.get('organization') or 'user'}/{spec['name']}"
                    hub.repos[repo_id] = spec
                    return self._send(200, {"url": f"{hub.url}/datasets/{repo_id}", "name": repo_id})
                if path == "/api/validate-yaml":
                    return self._send(200, {"errors": [], "warnings": []})
                if "/preupload/" in path:
                    files = json.loads(body)["files"]
                    return self._send(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                for f in files
                            ]
                        },
                    )
                if "/commit/" in path:
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    commit = {"header": lines[0]["value"], "files": []}
                    for line in lines[1:]:
                        if line["key"] == "file":
                            value = line["value"]
                            hub.files[value["path"]] = base64.b64decode(value["content"])
                            commit["files"].append(value["path"])
                    hub.commits.append(commit)
                    oid = f"{len(hub.commits):040x}"
                    repo = path.split("/api/datasets/", 1)[1].split("/commit/", 1)[0]
                    return self._send(
                        200, {"commitUrl": f"{hub.url}/datasets/{repo}/commit/{oid}", "commitOid": oid}
                    )
                return self._send(404, {"error": f"not served: {path}"})

        return Handler
