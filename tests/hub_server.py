"""A local HTTP server that stands in for the Hugging Face Hub's repo and commit API: a protocol test
peer, not the Hub. It records every request, keeps the committed files in memory (one repo) and lists
them as the Hub's tree API does."""

from __future__ import annotations

import base64
import json
from urllib.parse import unquote

from tests.http_stub import JSONHandler, StubServer


class HubServer(StubServer):
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.repos: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}
        self.commits: list[dict] = []
        super().__init__()

    @property
    def url(self) -> str:
        return self.root

    def handler(self):
        hub = self

        class Handler(JSONHandler):
            def do_GET(self) -> None:
                hub.requests.append(("GET", self.path, dict(self.headers)))
                path = self.path.split("?")[0]
                if "/revision/" in path:  # repo_info: the head commit of the one branch kept here
                    repo = path.split("/api/datasets/", 1)[1].split("/revision/", 1)[0]
                    return self.send_json(200, {"id": repo, "sha": f"{len(hub.commits):040x}"})
                if "/tree/" in path:  # /api/datasets/<repo>/tree/<revision>[/<folder>], recursive
                    folder = unquote(path.split("/tree/", 1)[1].partition("/")[2]).rstrip("/")
                    under = sorted(p for p in hub.files if not folder or p.startswith(folder + "/"))
                    if not under:  # as the Hub answers for a folder that does not exist
                        return self.send_json(404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})
                    entries = [
                        {"type": "file", "path": p, "size": len(hub.files[p]), "oid": f"{k:040x}"}
                        for k, p in enumerate(under)
                    ]
                    return self.send_json(200, entries)
                self.send_json(404, {"error": f"not served: {self.path}"})

            def do_POST(self) -> None:
                body = self.read_body()
                hub.requests.append(("POST", self.path, dict(self.headers)))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    spec = json.loads(body)
                    repo_id = f"{spec.get('organization') or 'user'}/{spec['name']}"
                    hub.repos[repo_id] = spec
                    return self.send_json(200, {"url": f"{hub.url}/datasets/{repo_id}", "name": repo_id})
                if path == "/api/validate-yaml":
                    return self.send_json(200, {"errors": [], "warnings": []})
                if "/preupload/" in path:
                    files = json.loads(body)["files"]
                    return self.send_json(
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
                    parent = commit["header"].get("parentCommit")
                    if parent is not None and parent != f"{len(hub.commits):040x}":  # as the Hub refuses it
                        return self.send_json(412, {"error": "parent commit is not the head"})
                    for line in lines[1:]:
                        if line["key"] == "file":
                            value = line["value"]
                            hub.files[value["path"]] = base64.b64decode(value["content"])
                            commit["files"].append(value["path"])
                        elif line["key"] == "deletedFile":
                            del hub.files[line["value"]["path"]]
                            commit.setdefault("deleted", []).append(line["value"]["path"])
                    hub.commits.append(commit)
                    oid = f"{len(hub.commits):040x}"
                    repo = path.split("/api/datasets/", 1)[1].split("/commit/", 1)[0]
                    return self.send_json(
                        200, {"commitUrl": f"{hub.url}/datasets/{repo}/commit/{oid}", "commitOid": oid}
                    )
                return self.send_json(404, {"error": f"not served: {path}"})

        return Handler
