"""bench/gpu_foley.py, the device call's main part, run on the CPU with the tiny model (SCALE=tiny): a
lent GPU comes for minutes, once, so the script must not rot between device sessions, and one failing
part must cost only its own figures. Slow (three runs of one to two minutes); nothing here is timed.

The failures are injected by a wrapper that patches the real class before the bench starts: a first
CUDA run of the prefix store, or of the decoder, could fail in ways this CPU cannot produce."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_bench_targets import targets  # bench/targets.py, loaded from its file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

BREAKS = {
    "": "",
    "store": (
        "from v2t_foley.foley_core.backends.prefix_store import PrefixStore\n"
        "def broken(self, entries):\n"
        "    raise RuntimeError('injected: the store step failed')\n"
        "PrefixStore.batch = broken\n"
    ),
    "decoder": (
        "from v2t_foley.foley_core.backends.continuous import ContinuousDecoder\n"
        "def broken(self, take):\n"
        "    raise RuntimeError('injected: the decoder failed')\n"
        "ContinuousDecoder.serve = broken\n"
    ),
}


def bench(tmp_path: Path, broken: str = "") -> list[dict]:
    """The bench's JSON lines (written as `cpu-foley.jsonl` for bench/targets.py), with `broken` (a key
    of BREAKS) failing as it would on the device."""
    wrapper = tmp_path / "run.py"
    head = f"import sys\nsys.path.insert(0, {str(ROOT / 'bench')!r})\n"
    wrapper.write_text(f"{head}{BREAKS[broken]}import gpu_foley\ngpu_foley.main()\n")
    env = os.environ | {
        "SCALE": "tiny",
        "FACTORY_CLIPS": "1",
        "BUDGET_S": "3000",
        "PYTHONPATH": str(ROOT),
        "FOLEY_CACHE_DIR": str(tmp_path / "cache"),
        "TMPDIR": str(tmp_path),  # the bench's work folder (clips, store) lands here, removed with it
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "CUDA_VISIBLE_DEVICES": "",  # the CPU run, even on a machine with a GPU
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    # its own session: on a timeout the bench goes with the Prefect server its harness started
    process = subprocess.Popen(
        [sys.executable, str(wrapper)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, err[-3000:]
    (tmp_path / "cpu-foley.jsonl").write_text(out)
    return targets.read_lines(tmp_path / "cpu-foley.jsonl")


def table(tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "targets.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def errors(lines: list[dict]) -> list[str]:
    return [line["step"] for line in lines if "error" in line]


def test_every_section_runs_and_the_fast_decoders_answer_as_generate(tmp_path):
    lines = bench(tmp_path)
    assert not errors(lines) and not [line for line in lines if line.get("skipped")]
    decodes = [line for line in lines if line["step"] == "generate"]
    assert {line["decoder"] for line in decodes} == {"generate", "continuous", "static"}
    fast = [line for line in decodes if line["decoder"] != "generate"]
    assert all(line["same_answers_as_generate"] == line["batch"] for line in fast)
    continuous = [line for line in decodes if line["decoder"] == "continuous"]
    assert [line["prefix_store"] for line in continuous] == [True] * 9 + [False]  # the A/B runs copies last
    # after the profile: every question joining alone; after the static decoder: the store's attention
    # as small ops, then as one opaque operator
    assert [line["join_together"] for line in continuous] == [True] * 4 + [False] + [True] * 5
    assert [line["attention_kernels"] for line in continuous] == [True] * 5 + [False] * 2 + [True] * 3
    assert [line["opaque_attention"] for line in continuous] == [False] * 7 + [True] * 2 + [False]
    # three questions about one clip: the first goes alone, the others are prefilled together
    assert [line["joined_together"] for line in continuous[2:5]] == [2, 2, 0]
    assert all(line["prefix_store_steps"] > 0 for line in continuous[:4])
    assert all(line["view_columns_per_step"] > 0 for line in continuous)  # the own columns a step read
    (profile,) = [line for line in lines if line["step"] == "profile"]
    assert profile["steps"] > 0 and profile["busy_ms_per_step"] > 0 and profile["top"]
    chains = [line for line in lines if line["step"] == "chain_one_clip"]
    assert [(c["decoder"], c["run"]) for c in chains] == [
        ("continuous", "cold"),
        ("continuous", "warm"),
        ("generate", "warm"),
    ]
    (factory,) = [line for line in lines if line["step"] == "factory"]
    assert factory["ok"] == factory["clips"] == 1 and factory["failed"] == 0
    # its own new shapes: 0 when the sections before it (the profile's batch) saw every one it used
    assert isinstance(factory["new_step_shapes"], int) and factory["prefix_store"] is True
    assert set(factory["step_seconds"]) >= {"propose", "identify+reason+synthesize"}
    # every decode step had a live row, and the clip's questions were prefilled (a video each, or fewer)
    assert factory["decode_steps"] > 0 and 1 <= factory["rows_per_step"] <= 32
    assert factory["video_prefills_per_clip"] > 0
    assert any(line["step"] == "lora_step" for line in lines)
    assert "failed:" not in table(tmp_path)


def test_a_failing_prefix_store_costs_only_its_own_line(tmp_path):
    """The first decode through the store fails and the same decode with copies succeeds: one error
    line, then every later continuous figure is measured with copies and every later section runs."""
    lines = bench(tmp_path, "store")
    assert errors(lines) == ["generate_continuous_b1_constrained"]
    after = lines[[line.get("error") is not None for line in lines].index(True) + 1 :]
    continuous = [line for line in after if line["step"] == "generate" and line["decoder"] == "continuous"]
    assert len(continuous) == 5 and all(line["prefix_store"] is False for line in continuous)
    assert all(line["same_answers_as_generate"] == line["batch"] for line in continuous)
    chains = [line for line in after if line["step"] == "chain_one_clip" and line["decoder"] == "continuous"]
    assert len(chains) == 2 and all(c["prefix_store"] is False for c in chains)
    (factory,) = [line for line in after if line["step"] == "factory"]
    assert factory["ok"] == 1 and factory["prefix_store"] is False
    assert any(line["step"] == "lora_step" for line in after)
    read = table(tmp_path)
    assert "failed: generate_continuous_b1_constrained" in read and "prefixes copied" in read


def test_a_failure_that_copies_share_leaves_the_store_on(tmp_path):
    """The continuous decoder itself fails (copies too): the store is not blamed, the copies are tried
    once, and the other decoders, the plain chain and the LoRA steps are still measured."""
    lines = bench(tmp_path, "decoder")
    failed = errors(lines)
    assert failed.count("generate_continuous_b1_constrained_prefixes_copied") == 1  # tried once a run
    assert all("continuous" in step for step in failed)
    (factory,) = [line for line in lines if line["step"] == "factory"]
    assert factory["prefix_store"] is True and factory["ok"] == 0 and factory["failed"] == 1
    assert "generate_continuous_copied_prefix_b32" in failed  # the store's A/B was still attempted
    decoders = {line["decoder"] for line in lines if line["step"] == "generate"}
    assert decoders == {"generate", "static"}
    chains = [(c["decoder"], c["run"]) for c in lines if c["step"] == "chain_one_clip"]
    assert chains == [("generate", "warm")]
    assert any(line["step"] == "lora_step" for line in lines)
