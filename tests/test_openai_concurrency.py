"""The openai backend as the way past one GPU: N requests in flight, frames first and byte-identical.

A local stub server holds each request until `wanted` requests are open at once (or a timeout), so a
client that sends them one at a time, in fixed batches, or too many at once, is seen doing so.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.chat_server import ChatServer
from v2t_foley.foley_core.backends import BackendSpec, GenerationParams, GenerationRequest
from v2t_foley.foley_core.backends.batching import BatchingVideoLLM
from v2t_foley.foley_core.backends.openai_backend import OpenAIVideoLLM
from v2t_foley.foley_core.backends.registry import release_shared_model, shared_model
from v2t_foley.foley_core.chain import ChainConfig, run_chain
from v2t_foley.foley_core.manifest import write_manifest
from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video
from v2t_foley.foley_core.video import open_video
from v2t_foley.foley_core.video.reader import Frames


class ReadingServer(ChatServer):
    """A ChatServer that sees each request's body before answering it (`arrived`, in the request's
    thread: it may wait there)."""

    def arrived(self, request: dict) -> Callable[[], None] | None:
        """Called before the answer; what it returns is called once, just before the answer is sent (the
        client may send its next request the moment it has it)."""
        return None

    def handler(self):
        base = super().handler()
        server = self

        class Reading(base):
            body = b""
            leave: Callable[[], None] | None = None

            def read_body(self) -> bytes:
                return self.body  # read once, before `arrived`

            def do_POST(self) -> None:
                self.body = base.read_body(self)
                self.leave = server.arrived(json.loads(self.body))
                try:
                    super().do_POST()
                finally:
                    self.left()

            def send_json(self, *args, **kwargs) -> None:
                self.left()
                super().send_json(*args, **kwargs)

            def left(self) -> None:
                leave, self.leave = self.leave, None
                if leave is not None:
                    leave()

        return Reading


class HoldingServer(ReadingServer):
    """Counts the peak of requests open at once. Until `wanted` have been open at once, a request waits
    for that, up to `fill_s` (a slow machine's client is given the time to send that many; one that
    waited in vain ends every wait: the client never will). After, each is held `hold_s` or until more
    than `wanted` are open, so that a client sending more than `wanted` at once is seen doing so."""

    def __init__(
        self,
        wanted: int,
        fill_s: float = 60.0,
        hold_s: float = 1.0,
        counts: Callable[[dict], bool] | None = None,
    ) -> None:
        self.wanted, self.fill_s, self.hold_s = wanted, fill_s, hold_s
        self.counts = counts or (lambda body: True)  # which requests are counted and held (by body)
        self.open = 0
        self.peak = 0
        self.gave_up = False
        self.cond = threading.Condition()
        super().__init__()

    def arrived(self, request: dict) -> Callable[[], None] | None:
        if not self.counts(request):
            return None
        with self.cond:
            self.open += 1
            self.peak = max(self.peak, self.open)
            self.cond.notify_all()
            # filling: released once the peak is reached (it may have passed by when it wakes)
            filling = self.peak < self.wanted
            deadline = time.monotonic() + (self.fill_s if filling else self.hold_s)
            while not self.gave_up and (self.peak < self.wanted if filling else self.open <= self.wanted):
                if time.monotonic() >= deadline:
                    if filling:
                        self.gave_up = True
                        self.cond.notify_all()
                    break
                self.cond.wait(timeout=deadline - time.monotonic())
        return self.leave

    def leave(self) -> None:
        with self.cond:
            self.open -= 1


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


def asks_reason(body: dict) -> bool:
    """A request of the per-event `reason` step (its schema asks for the event's main object)."""
    schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
    return "main_object" in schema.get("properties", {})


def test_the_plain_loop_asks_one_videos_events_at_once(scene_video):
    """`foley script`'s loop asks a per-event step's questions side by side when the model answers
    several at once: the chain waits for its longest event's answer, not for their sum. A model that
    takes one caller at a time is still asked one question at a time."""
    with ChatServer() as server:  # the stub answers the same every time: how many events the chain finds
        trace = run_chain(open_video(str(scene_video)), OpenAIVideoLLM("m", server.url)).trace
    events = len(trace.events)
    assert events >= 2
    with HoldingServer(wanted=events, fill_s=60.0, counts=asks_reason) as server:
        run_chain(open_video(str(scene_video)), OpenAIVideoLLM("m", server.url, max_concurrency=8))
        assert (server.peak, server.gave_up) == (events, False)
    with HoldingServer(wanted=2, fill_s=2.0, counts=asks_reason) as server:
        one_at_a_time = OpenAIVideoLLM("m", server.url, max_concurrency=8)
        one_at_a_time.parallel_requests = 1  # as a model that must be called from one thread
        run_chain(open_video(str(scene_video)), one_at_a_time)
        assert server.peak == 1


def distinct_clips(folder: Path, n: int) -> str:
    """A manifest of `n` short generated clips, each of its own content (its own cache keys)."""
    rows = []
    for k in range(n):
        spec = SceneSpec(duration=1.0 + 0.05 * k, cuts=(0.5,), clicks=(0.25,))
        rows.append({"video": str(write_scene_video(folder / f"c{k}.mp4", spec)), "id": f"c{k}"})
    return write_manifest(rows, str(folder / "manifest.csv"))


def build_against(server: ChatServer, folder: Path, clips: int, **options):
    """A build of `clips` generated clips in one shard (model timing) on the openai backend at `server`."""
    from v2t_foley.flows.build_dataset import build_dataset

    options |= {"backend": "openai", "model": "m", "base_url": server.url, "timing": "model"}
    return build_dataset(distinct_clips(folder, clips), str(folder / "store"), shard_size=clips, **options)


def test_a_shards_model_steps_keep_every_slot_busy(tmp_path, prefect_harness):
    """The factory's step tasks put `--concurrency` requests in flight at once, past the step's 16
    threads (they once capped every step of one question per video at 16 of a server's or a decoder's
    32). Each step of this shard has one question per video: 20 at once."""
    with HoldingServer(wanted=20, fill_s=60.0, hold_s=0.5) as server:
        summary = build_against(server, tmp_path, clips=20, concurrency=20)
        assert summary.new_ok_rows == 20
        assert (server.peak, server.gave_up) == (20, False)


def asks_identify(body: dict) -> bool:
    """A request of the `identify` step (model timing: its schema asks for the clip's events)."""
    schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
    return "events" in schema.get("properties", {})


class GatedServer(ReadingServer):
    """Holds the first request `gated` matches until a request `opens` matches arrives, or `wait_s`
    passes (then `waited_in_vain`): a client that sends the second only once the first is answered is
    seen waiting."""

    def __init__(self, gated: Callable[[dict], bool], opens: Callable[[dict], bool], wait_s: float) -> None:
        self.gated, self.opens, self.wait_s = gated, opens, wait_s
        self.held = False
        self.opened = threading.Event()
        self.waited_in_vain = False
        super().__init__()

    def arrived(self, request: dict) -> Callable[[], None] | None:
        if self.opens(request):
            self.opened.set()
        with self.lock:
            hold = self.gated(request) and not self.held
            self.held = self.held or hold
        if hold and not self.opened.wait(self.wait_s):
            self.waited_in_vain = True
        return None


def test_a_video_asks_its_next_step_while_another_still_answers_identify(tmp_path, prefect_harness):
    """A shard's model steps run as a pipeline: a video whose identify answer is in asks its events'
    reason questions while the other video's identify question is still open (the server holds it until
    a reason question arrives), not once the whole shard has answered identify."""
    with GatedServer(gated=asks_identify, opens=asks_reason, wait_s=30.0) as server:
        summary = build_against(server, tmp_path, clips=2)
        assert summary.new_ok_rows == 2
        assert summary.computed == {"sample": 2, "identify": 2, "reason": 2, "synthesize": 2, "validate": 2}
        assert server.held and not server.waited_in_vain
