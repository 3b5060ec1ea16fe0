"""The openai backend as the way past one GPU: N requests in flight, frames first and byte-identical.

A local stub server holds each request until `wanted` requests are open at once (or a timeout), so a
client that sends them one at a time, in fixed batches, or too many at once, is seen doing so.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.chat_server import ChatServer
from v2t_foley.foley_core.backends import BackendSpec, GenerationParams, GenerationRequest
from v2t_foley.foley_core.backends.batching import BatchingVideoLLM
from v2t_foley.foley_core.backends.openai_backend import OpenAIVideoLLM
from v2t_foley.foley_core.backends.registry import release_shared_model, shared_model
from v2t_foley.foley_core.chain import ChainConfig, run_chain
from v2t_foley.foley_core.video import open_video
from v2t_foley.foley_core.video.reader import Frames


class HoldingServer(ChatServer):
    """Counts the peak of requests open at once. Until `wanted` have been open at once, a request waits
    for that, up to `fill_s` (a slow machine's client is given the time to send that many; one that
    waited in vain ends every wait: the client never will). After, each is held `hold_s` or until more
    than `wanted` are open, so that a client sending more than `wanted` at once is seen doing so."""

    def __init__(self, wanted: int, fill_s: float = 60.0, hold_s: float = 1.0) -> None:
        self.wanted, self.fill_s, self.hold_s = wanted, fill_s, hold_s
        self.open = 0
        self.peak = 0
        self.gave_up = False
        self.cond = threading.Condition()
        super().__init__()

    def handler(self):
        base = super().handler()
        server = self

        class Holding(base):
            def do_POST(self) -> None:
                with server.cond:
                    server.open += 1
                    server.peak = max(server.peak, server.open)
                    server.cond.notify_all()
                    # filling: released once the peak is reached (it may have passed by when it wakes)
                    filling = server.peak < server.wanted
                    deadline = time.monotonic() + (server.fill_s if filling else server.hold_s)
                    while not server.gave_up and (
                        server.peak < server.wanted if filling else server.open <= server.wanted
                    ):
                        if time.monotonic() >= deadline:
                            if filling:
                                server.gave_up = True
                                server.cond.notify_all()
                            break
                        server.cond.wait(timeout=deadline - time.monotonic())
                self.counted = True
                try:
                    super().do_POST()
                finally:
                    self.leave()

            def send_json(self, *args, **kwargs) -> None:
                self.leave()  # before the answer: the client may send its next request the moment it has it
                super().send_json(*args, **kwargs)

            def leave(self) -> None:
                with server.cond:
                    if self.counted:
                        server.open -= 1
                        self.counted = False

        return Holding


def frames(seed: int = 0) -> Frames:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    return Frames(images=images, times=(0.0, 1.0, 2.0, 3.0), indices=(0, 1, 2, 3))


SCHEMA = {
    "type": "object",
    "properties": {"what": {"type": "string", "minLength": 1, "maxLength": 8}},
    "required": ["what"],
    "additionalProperties": False,
}


def test_n_requests_are_in_flight_at_once():
    with HoldingServer(wanted=6) as server:
        llm = OpenAIVideoLLM("m", server.url, max_concurrency=6)
        clip = frames()
        requests = [GenerationRequest(clip, f"question {k}", SCHEMA) for k in range(18)]
        answers = llm.generate(requests, GenerationParams())
        assert len(answers) == 18 and all(a.text for a in answers)
        assert server.peak == 6  # six at once, never more
        assert llm.max_in_flight == 6


def test_the_cap_holds_across_threads_and_the_registry_does_not_batch_a_server():
    with HoldingServer(wanted=4) as server:
        spec = BackendSpec(backend="openai", model="m", base_url=server.url, concurrency=4, batch_size=2)
        try:
            llm = shared_model(spec, ("", ""))
            assert not isinstance(llm, BatchingVideoLLM)  # no fixed-size batches in front of a server
            clip = frames()
            # eight callers (the factory's tasks) asking one question each: four go out at once
            threads = [
                threading.Thread(
                    target=llm.generate, args=([GenerationRequest(clip, f"q{k}", SCHEMA)], GenerationParams())
                )
                for k in range(8)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=180)
            assert len(server.requests) == 8
            assert server.peak == 4
        finally:
            release_shared_model()


def test_concurrency_must_be_positive():
    from v2t_foley.foley_core.errors import InputError

    with pytest.raises(InputError, match="concurrency"):
        BackendSpec(backend="openai", model="m", base_url="http://127.0.0.1:1/v1", concurrency=0)


def test_every_question_about_a_video_starts_with_the_same_frames(scene_video):
    """The shared prefix a server's cache reuses: frame stamps and identical JPEG bytes, then the prompt."""
    with ChatServer() as server:
        llm = OpenAIVideoLLM("m", server.url, max_concurrency=4)
        run_chain(open_video(str(scene_video)), llm, config=ChainConfig(timing="model"))
        prefixes = [r["messages"][0]["content"][:-1] for r in server.requests]
        assert len(prefixes) >= 3
        assert all(p == prefixes[0] for p in prefixes)
        assert [r["messages"][0]["content"][-1]["type"] for r in server.requests] == ["text"] * len(prefixes)
        assert prefixes[0][1]["type"] == "image_url"  # frames come first, the question last
