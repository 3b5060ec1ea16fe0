"""bench/gpu_foley.py, the device call's main part, run on the CPU with the tiny model (SCALE=tiny): a
lent GPU comes for minutes, once, so the script must not rot between device sessions, and one failing
part must cost only its own figures. Slow (two runs of about two minutes); nothing here is timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(tmp_path: Path, *, break_store: bool) -> list[dict]:
    """The bench's JSON lines; with `break_store`, every decode step through the prefix store raises
    (a wrapper patches the real PrefixStore before the bench starts: the failure a first CUDA run of
    the store could meet, which this CPU cannot produce)."""
    wrapper = tmp_path / "run.py"
    wrapper.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
        "from v2t_foley.foley_core.backends.prefix_store import PrefixStore\n"
        "def broken(self, entries):\n"
        "    raise RuntimeError('injected: the store step failed')\n"
        f"if {break_store!r}:\n"
        "    PrefixStore.batch = broken\n"
        "import gpu_foley\n"
        "gpu_foley.main()\n"
    )
    env = os.environ | {
        "SCALE": "tiny",
        "FACTORY_CLIPS": "1",
        "BUDGET_S": "3000",
        "PYTHONPATH": str(ROOT),
        "FOLEY_CACHE_DIR": str(tmp_path / "cache"),
        "TMPDIR": str(tmp_path),  # the bench's work folder (clips, store) lands here, removed with it
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    done = subprocess.run(
        [sys.executable, str(wrapper)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_every_section_runs_and_the_fast_decoders_answer_as_generate(tmp_path):
    lines = bench(tmp_path, break_store=False)
    assert not [line for line in lines if "error" in line or line.get("skipped")]
    decodes = [line for line in lines if line["step"] == "generate"]
    assert {line["decoder"] for line in decodes} == {"generate", "continuous", "static"}
    fast = [line for line in decodes if line["decoder"] != "generate"]
    assert all(line["same_answers_as_generate"] == line["batch"] for line in fast)
    continuous = [line for line in decodes if line["decoder"] == "continuous"]
    assert [line["prefix_store"] for line in continuous] == [True] * 4 + [False]  # the A/B runs copies last
    assert all(line["prefix_store_steps"] > 0 for line in continuous[:4])
    chains = [line for line in lines if line["step"] == "chain_one_clip"]
    assert [(c["decoder"], c["run"]) for c in chains] == [
        ("continuous", "cold"),
        ("continuous", "warm"),
        ("generate", "warm"),
    ]
    (factory,) = [line for line in lines if line["step"] == "factory"]
    assert factory["ok"] == factory["clips"] == 1 and factory["failed"] == 0
    assert set(factory["step_seconds"]) >= {"propose", "identify", "reason", "synthesize"}
    assert any(line["step"] == "lora_step" for line in lines)

    (tmp_path / "cpu-foley.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    table = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "targets.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert table.returncode == 0 and "failed:" not in table.stdout


def test_a_failing_prefix_store_costs_only_its_own_line(tmp_path):
    """The first decode through the store fails: one error line, then every later continuous figure
    is measured with copies and every later section still runs."""
    lines = bench(tmp_path, break_store=True)
    errors = [line for line in lines if "error" in line]
    assert [e["step"] for e in errors] == ["generate_continuous_b1_constrained"]
    assert "injected" in errors[0]["error"]
    after = lines[lines.index(errors[0]) + 1 :]
    continuous = [line for line in after if line["step"] == "generate" and line["decoder"] == "continuous"]
    assert len(continuous) == 4 and all(line["prefix_store"] is False for line in continuous)
    assert all(line["same_answers_as_generate"] == line["batch"] for line in continuous)
    chains = [line for line in after if line["step"] == "chain_one_clip" and line["decoder"] == "continuous"]
    assert len(chains) == 2 and all(c["prefix_store"] is False for c in chains)
    (factory,) = [line for line in after if line["step"] == "factory"]
    assert factory["ok"] == 1 and factory["prefix_store"] is False
    assert any(line["step"] == "lora_step" for line in after)
