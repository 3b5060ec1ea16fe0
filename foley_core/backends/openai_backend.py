"""Any OpenAI-compatible chat-completions server (vLLM, llama.cpp, Ollama, SGLang) as a VideoLLM.

Frames travel as base64 JPEG images, each preceded by its timestamp; answers are constrained with
`response_format: json_schema`. Requests run concurrently up to a limit; connection errors, timeouts,
429 and 5xx are retried with backoff; other 4xx fail at once with the server's message. The API key
comes from the environment and is never logged or stored.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import time
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
        max_concurrency: int = 8,
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
        self.retries = retries
        self.backoff_s = backoff_s
        self.frame_policy = frame_policy or FramePolicy()
        self.image_max_side = image_max_side
        key = api_key or os.environ.get("OPENAI_API_KEY", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.client.close()

    def generate(self, requests: Sequence[GenerationRequest], params: GenerationParams) -> list[Generation]:
        encoded: dict[int, list[str]] = {}
        for request in requests:  # encode each distinct frame set once
            encoded.setdefault(id(request.frames), self._encode_frames(request.frames))
        workers = max(1, min(self.max_concurrency, len(requests)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda r: self._one(r, encoded[id(r.frames)], params), requests))

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
        """The chat-completions request body for one question."""
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
                response = self.client.post(path, json=body)
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
