"""Any OpenAI-compatible chat-completions server (vLLM, llama.cpp, Ollama, SGLang) as a VideoLLM.

Frames travel as base64 JPEG images, each preceded by its timestamp; answers are constrained with
`response_format: json_schema`. At most `max_concurrency` requests are in flight at once, across every
thread that calls `generate` (the factory's tasks share one instance), so a vLLM or SGLang server sees a
steady queue and batches it continuously. Every request about one video starts with the same frames,
in the same order and the same JPEG bytes (encoded once, kept by content), and only then the question:
the server's prefix cache reuses the video's tokens across all the questions about it. Connection
errors, timeouts, 429 and 5xx are retried with backoff; other 4xx fail at once with the server's
message. The API key comes from the environment and is never logged or stored.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from PIL import Image

from v2t_foley.foley_core.backends.base import Generation, GenerationParams, GenerationRequest, VideoLLM
from v2t_foley.foley_core.errors import BackendError, TransientBackendError
from v2t_foley.foley_core.schema.decoding import max_output_bytes
from v2t_foley.foley_core.video.reader import Frames
from v2t_foley.foley_core.video.sampling import FramePolicy

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class OpenAIVideoLLM(VideoLLM):
    backend = "openai"

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        json_schema: bool = True,
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        frame_policy: FramePolicy | None = None,
        image_max_side: int = 512,
    ) -> None:
        self.model_id = model
        self.revision = ""
        self.base_url = base_url.rstrip("/")
        self.supports_json_schema = json_schema
        self.max_concurrency = max_concurrency
        self.parallel_requests = max_concurrency  # thread-safe: the semaphore below holds the cap
        self.retries = retries
        self.backoff_s = backoff_s
        self.frame_policy = frame_policy or FramePolicy()
        self.image_max_side = image_max_side
        key = api_key or os.environ.get("OPENAI_API_KEY", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._slots = threading.BoundedSemaphore(max_concurrency)  # requests in flight, all callers
        self._encoded: OrderedDict[str, list[str]] = OrderedDict()  # frames' content -> JPEG data URLs
        self._encoded_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.in_flight = 0  # requests on the wire now, and the most seen at once (for tests, benchmarks)
        self.max_in_flight = 0
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, limits=limits)

    def close(self) -> None:
        self.client.close()

    def generate(self, requests: Sequence[GenerationRequest], params: GenerationParams) -> list[Generation]:
        encoded: dict[int, list[str]] = {}
        for request in requests:  # each distinct frame set once (and the same bytes as before)
            if id(request.frames) not in encoded:
                encoded[id(request.frames)] = self.encoded_frames(request.frames)
        if len(requests) == 1:
            return [self._one(requests[0], encoded[id(requests[0].frames)], params)]
        workers = max(1, min(self.max_concurrency, len(requests)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda r: self._one(r, encoded[id(r.frames)], params), requests))

    def encoded_frames(self, frames: Frames) -> list[str]:
        """The frames as JPEG data URLs, encoded once per content and reused, so every request about a
        video sends byte-identical images (a server's prefix cache matches them)."""
        digest = hashlib.sha256()
        for t, image in zip(frames.times, frames.images, strict=True):
            digest.update(f"{t:.6f}:{image.shape}".encode())
            digest.update(image.tobytes())
        key = digest.hexdigest()
        with self._encoded_lock:
            if key in self._encoded:
                self._encoded.move_to_end(key)
                return self._encoded[key]
        urls = self._encode_frames(frames)
        with self._encoded_lock:
            self._encoded[key] = urls
            while len(self._encoded) > 64:
                self._encoded.popitem(last=False)
        return urls

    def _encode_frames(self, frames: Frames) -> list[str]:
        urls = []
        for image in frames.images:
            picture = Image.fromarray(image)
            picture.thumbnail((self.image_max_side, self.image_max_side))
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=85)
            urls.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
        return urls

    def body(self, request: GenerationRequest, images: list[str], params: GenerationParams) -> dict[str, Any]:
        """The chat-completions request body for one question: the frames first (a prefix shared by
        every question about the video), then the question."""
        content: list[dict[str, Any]] = []
        for t, url in zip(request.frames.times, images, strict=True):
            content.append({"type": "text", "text": f"Frame at {t:.2f} s:"})
            content.append({"type": "image_url", "image_url": {"url": url}})
        content.append({"type": "text", "text": request.prompt})
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": [{"role": "user", "content": content}],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        schema = request.json_schema if self.supports_json_schema else None
        if params.max_new_tokens is not None:
            body["max_tokens"] = params.max_new_tokens
        elif schema:
            body["max_tokens"] = max_output_bytes(schema) + 1
        if schema:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        return body

    def _one(self, request: GenerationRequest, images: list[str], params: GenerationParams) -> Generation:
        body = self.body(request, images, params)
        data = self._post_with_retries("/chat/completions", body)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise BackendError(
                f"{self.base_url}: not a chat-completions response: {str(data)[:200]}"
            ) from None
        usage = data.get("usage") or {}
        return Generation(
            text=text,
            new_tokens=int(usage.get("completion_tokens", 0)),
            finished=choice.get("finish_reason") in ("stop", "eos", None),
            constrained="response_format" in body,
        )

    def _post_with_retries(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "%s%s: %s; retry %d/%d in %.1f s",
                    self.base_url,
                    path,
                    problem,
                    attempt,
                    self.retries,
                    delay,
                )
                time.sleep(delay)
            try:
                with self._slots:
                    with self._count_lock:
                        self.in_flight += 1
                        self.max_in_flight = max(self.max_in_flight, self.in_flight)
                    try:
                        response = self.client.post(path, json=body)
                    finally:
                        with self._count_lock:
                            self.in_flight -= 1
            except (httpx.TransportError, httpx.TimeoutException) as err:
                problem = f"{type(err).__name__}: {err}"
                continue
            if response.status_code in RETRY_STATUS:
                problem = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise BackendError(
                    f"{self.base_url}{path}: HTTP {response.status_code}: {response.text[:300]}"
                )
            return response.json()
        raise TransientBackendError(
            f"{self.base_url}{path}: gave up after {self.retries} retries ({problem})"
        )
