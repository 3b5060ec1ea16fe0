"""The openai backend against a local server that speaks the chat-completions protocol.

These are protocol tests, not model tests: the server (tests/chat_server.py) answers with the smallest
instance of the requested schema, or with scripted failures.
"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.chat_server import ChatServer
from v2t_foley.foley_core.backends.openai_backend import OpenAIVideoLLM
from v2t_foley.foley_core.chain import ChainConfig, run_chain
from v2t_foley.foley_core.errors import BackendError, ChainError, TransientBackendError
from v2t_foley.foley_core.schema import validate_script
from v2t_foley.foley_core.video import open_video

MODEL_TIMING = ChainConfig(timing="model")  # protocol tests: the model-timed chain, three calls a clip


@pytest.fixture
def server():
    with ChatServer() as running:
        yield running


def test_chain_over_the_protocol(server, scene_video, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    llm = OpenAIVideoLLM("served-model", server.url, max_concurrency=4)
    video = open_video(str(scene_video))
    result = run_chain(video, llm, config=MODEL_TIMING)
    validate_script(result.script, video.info.duration)
    steps = [c.step for c in result.trace.calls]
    assert steps == ["identify", "reason", "synthesize"]

    first = server.requests[0]
    assert first["model"] == "served-model"
    assert first["response_format"]["type"] == "json_schema"
    assert first["response_format"]["json_schema"]["schema"]["required"] == ["events"]
    content = first["messages"][0]["content"]
    stamps = [part["text"] for part in content if part["type"] == "text"][:-1]
    assert stamps == [f"Frame at {t:.2f} s:" for t in result.trace.frame_times]
    images = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
    assert len(images) == 8
    picture = Image.open(io.BytesIO(base64.b64decode(images[0].split(",", 1)[1])))
    assert picture.format == "JPEG" and picture.size == (160, 96)
    assert server.headers[0]["Authorization"] == "Bearer sk-test-secret"
    assert "sk-test-secret" not in result.trace.model_dump_json()


def test_5xx_and_dropped_connections_are_retried(server, scene_video):
    server.script.extend(["503", "drop", "ok"])
    llm = OpenAIVideoLLM("m", server.url, backoff_s=0.01, max_concurrency=1)
    video = open_video(str(scene_video))
    result = run_chain(video, llm, config=MODEL_TIMING)
    assert len(server.requests) == 3 + 2  # identify took three tries; reason and synthesize one each
    assert result.script is not None


@pytest.mark.parametrize("failing_attempts", [1, 3])
def test_retries_give_up_as_a_transient_error_and_the_plain_loop_asks_again(
    server, scene_video, monkeypatch, failing_attempts
):
    """The backend gives up after its retries (a transient error); the plain loop asks the step again,
    up to its attempts (executor.STEP_ATTEMPTS, 3), waiting between them (its sleeps recorded, not
    slept), and fails the video after the last."""
    from types import SimpleNamespace

    from v2t_foley.foley_core.chain import executor

    slept: list[float] = []
    monkeypatch.setattr(executor, "time", SimpleNamespace(sleep=slept.append))
    server.script.extend(["503"] * 3 * failing_attempts)  # each attempt of identify: 1 try + 2 retries
    llm = OpenAIVideoLLM("m", server.url, retries=2, backoff_s=0.01)
    if failing_attempts == executor.STEP_ATTEMPTS:
        with pytest.raises(TransientBackendError, match="gave up after 2 retries"):
            run_chain(open_video(str(scene_video)), llm, config=MODEL_TIMING)
        assert len(server.requests) == 3 * failing_attempts  # no step after identify was asked
    else:
        result = run_chain(open_video(str(scene_video)), llm, config=MODEL_TIMING)
        assert result.script is not None
        assert len(server.requests) == 3 * failing_attempts + 3  # identify once more, then the others
    # a wait after each failed attempt but the last
    assert slept == [executor.RETRY_DELAY_S] * min(failing_attempts, executor.STEP_ATTEMPTS - 1)


def test_4xx_fails_at_once_with_the_servers_message(server, scene_video):
    server.script.append("400")
    llm = OpenAIVideoLLM("m", server.url, backoff_s=0.01)
    with pytest.raises(BackendError, match=r"HTTP 400.*scripted 400"):
        run_chain(open_video(str(scene_video)), llm, config=MODEL_TIMING)
    assert len(server.requests) == 1


def test_free_text_answer_is_repaired_once(server, scene_video):
    """A server without json_schema support: the first answer is prose, the repair succeeds."""
    server.script.append("garbage")
    llm = OpenAIVideoLLM("m", server.url, json_schema=True)
    video = open_video(str(scene_video))
    result = run_chain(video, llm, config=MODEL_TIMING)
    identify = result.trace.calls[0]
    assert "no JSON object" in identify.error
    assert identify.repair_prompt and "could not be used" in identify.repair_prompt
    assert identify.answer is not None


def test_garbage_twice_fails_the_chain_clearly(server, scene_video):
    server.script.extend(["garbage", "garbage"])
    llm = OpenAIVideoLLM("m", server.url, json_schema=False)
    with pytest.raises(ChainError, match=r"identify: unusable answer: .*after one repair"):
        run_chain(open_video(str(scene_video)), llm, config=ChainConfig(constrained=False, timing="model"))


def test_measured_chain_over_the_protocol(server, scene_video):
    """Measured timing: one describe question per measured window, each with that window's frames."""
    llm = OpenAIVideoLLM("m", server.url)
    video = open_video(str(scene_video))
    result = run_chain(video, llm)
    describe = [c for c in result.trace.calls if c.step == "describe"]
    assert describe and len(describe) == len(result.trace.events)
    frame = 1 / video.info.fps  # a window shorter than a frame shows the frame on screen at its start
    for call, event in zip(describe, result.trace.events, strict=True):
        assert all(event.start - frame - 1e-6 <= t <= event.end + 1e-6 for t in call.frame_times)
    assert result.trace.proposals and result.trace.timing == "measured"
