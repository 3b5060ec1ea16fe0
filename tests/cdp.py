"""A headless Chromium driven over the DevTools protocol (websockets), for tests of static pages.

Debian's `chromium` is installed by `chromium_path()` when missing and we are root (apt-get); a test
that cannot have it skips, saying why.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def chromium_path() -> str:
    """The chromium binary; installed with apt-get when missing and possible, else the test skips."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
        found = shutil.which("chromium")
        if found:
            return found
    pytest.skip("needs Debian's chromium (apt-get install chromium; the test installs it when run as root)")


class Browser:
    """One headless Chromium and a websocket to its first page."""

    def __init__(self, binary: str, width: int = 1100, height: int = 760) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="foley-chromium-")
        self.process = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--mute-audio",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "--autoplay-policy=no-user-gesture-required",
                f"--window-size={width},{height}",
                "--allow-file-access-from-files",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        page = self._first_page(port, deadline)
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _first_page(self, port: str, deadline: float) -> dict:
        """The browser's first page target (the endpoint may answer before that page exists)."""
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
                pages = [t for t in json.loads(answer.read()) if t["type"] == "page"]
            if pages:
                return pages[0]
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium opened no page")
            time.sleep(0.1)

    def call(self, method: str, **params):
        message_id = next(self.ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def navigate(self, url: str, timeout_s: float = 60) -> None:
        """Open `url` and wait until its document has loaded (Page.navigate may answer while the old
        document is still the one that answers, or while no document does)."""
        self.events.clear()
        self.js("window.__leaving = true")  # the old document's mark: the new one has none
        opened = self.call("Page.navigate", url=url)
        if opened.get("errorText"):
            raise RuntimeError(f"{url}: {opened['errorText']}")
        # both sides decoded: the browser and Path.as_uri() may escape a character differently
        same = f"decodeURIComponent(location.href) === decodeURIComponent({json.dumps(url)})"
        loaded = f"window.__leaving === undefined && {same} && document.readyState === 'complete'"
        deadline, last = time.monotonic() + timeout_s, None
        while True:
            try:
                if self.js(f"!!({loaded})"):
                    return
            except RuntimeError as error:  # the old document's context was destroyed under the call
                last = error
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load (last error: {last})")
            time.sleep(0.1)

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.js(f"!!({expression})"):
            if time.monotonic() > deadline:
                raise TimeoutError(expression)
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the element."""
        box = self.js(
            f"(()=>{{const r=document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            "return [r.x+r.width/2, r.y+r.height/2]})()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)
