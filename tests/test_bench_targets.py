"""bench/targets.py: the issue's targets read from a device call's files, judged against that call's
own plain baseline; a figure the call did not reach is never a pass."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_targets():
    spec = importlib.util.spec_from_file_location("bench_targets", ROOT / "bench" / "targets.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    return module


targets = load_targets()


def write(folder: Path, name: str, lines: list[dict], tail: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(line) + "\n" for line in lines) + tail)


def decode_line(
    decoder: str, batch: int, tok_s: float, store: bool | None = True, constrained: bool = True
) -> dict:
    return {
        "step": "generate",
        "decoder": decoder,
        "batch": batch,
        "constrained": constrained,
        "tok_s_total": tok_s,
        "same_answers_as_generate": batch,
        "prefix_store": store if decoder == "continuous" else None,
        "peak_gib": 40.0,
    }


def verdicts(folder: Path) -> dict[str, str]:
    return {row.figure: row.verdict for row in targets.rows(folder)[1]}


B32 = "constrained decode, batch 32, continuous (tok/s)"


@pytest.mark.parametrize(
    ("card", "tok_s", "plain", "verdict"),
    [
        ("NVIDIA H200", 2400.0, 400.0, "met"),  # both the absolute target and 5x (2,000)
        ("NVIDIA H200", 2399.0, 400.0, "not met"),  # under 2,400 on an H200
        ("NVIDIA H200", 2500.0, 600.0, "not met"),  # under 5x its own call's baseline (3,000)
        ("NVIDIA H100 80GB HBM3", 2000.0, 400.0, "met"),  # the H100's own target
        ("NVIDIA A100", 600.0, 100.0, "met"),  # another card: only the ratio is judged
    ],
)
def test_batch_32_is_judged_against_the_card_and_its_own_baseline(tmp_path, card, tok_s, plain, verdict):
    write(tmp_path, "x-foley.jsonl", [{"step": "init", "device": card}, decode_line("continuous", 32, tok_s)])
    write(
        tmp_path, "x-baseline-plain.jsonl", [{"step": "generate", "batch": 32, "decode_tok_s_total": plain}]
    )
    name, found = targets.rows(tmp_path)
    assert name == card
    assert {r.figure: r.verdict for r in found}[B32] == verdict


def test_what_the_call_did_not_reach_is_not_measured(tmp_path):
    """A missing baseline, a skipped section and a line cut by the part's timeout: nothing passes."""
    write(
        tmp_path,
        "NVIDIA-H200-foley.jsonl",
        [
            {"step": "init", "device": "NVIDIA H200"},
            decode_line("continuous", 32, 9000.0),
            {"step": "factory", "skipped": True, "spent_s": 280.0, "budget_s": 270.0},
        ],
        tail='{"step": "generate", "decoder": "static", "bat',  # killed mid-line
    )
    found = verdicts(tmp_path)
    assert found[B32] == "not measured"  # no plain baseline in this call: no ratio, no pass
    assert found["factory path, 32 clips of 10 s (ok rows/hour)"] == "not measured"
    assert found["skipped: factory"] == ""
    assert found["constrained decode, batch 32, static (tok/s)"] == "not measured"


def test_the_store_and_the_copies_lines_are_told_apart(tmp_path):
    write(
        tmp_path,
        "c-foley.jsonl",
        [
            {"step": "init", "device": "NVIDIA H200"},
            decode_line("continuous", 32, 3000.0),
            decode_line("continuous", 32, 1000.0, store=False),
        ],
    )
    write(
        tmp_path, "c-baseline-plain.jsonl", [{"step": "generate", "batch": 32, "decode_tok_s_total": 400.0}]
    )
    found = {row.figure: row for row in targets.rows(tmp_path)[1]}
    assert found[B32].measured == targets.fmt(3000.0) and found[B32].verdict == "met"
    assert found["prefix store against copies, constrained batch 32 (tok/s)"].measured == (
        f"{targets.fmt(3000.0)} vs {targets.fmt(1000.0)}"
    )


def test_a_real_bench_output_gives_a_markdown_table(tmp_path):
    """The tiny CPU run of bench/gpu_foley.py kept in bench/results: the chain's ratio comes from its
    warm continuous line, and every table line has the header's five cells."""
    source = ROOT / "bench" / "results" / "cpu-tiny-foley-store.jsonl"
    (tmp_path / "cpu-foley.jsonl").write_text(source.read_text())
    warm = next(
        json.loads(t)
        for t in source.read_text().splitlines()
        if '"chain_one_clip"' in t and '"warm"' in t and '"continuous"' in t
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "targets.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert all(line.count("|") == 6 for line in table)
    chain = next(line for line in table if line.startswith("| chain on one clip"))
    verdict = "met" if warm["over_caption"] <= targets.CHAIN_OVER_CAPTION else "not met"
    assert f"| {targets.fmt(warm['over_caption'])} |" in chain and chain.endswith(f"| {verdict} |")


def test_a_folder_without_the_bench_output_exits_2_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "targets.py"), str(tmp_path / "absent")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_the_factory_is_judged_on_the_clips_that_got_an_ok_row(tmp_path):
    """Half the clips failing fast must not read as a fast factory: 32 clips in 20 s is 5,760 an hour,
    but 16 ok rows in 20 s is 2,880."""
    factory = {"step": "factory", "clips": 32, "ok": 16, "failed": 16, "s": 20.0, "clips_per_hour": 5760}
    write(tmp_path, "h-foley.jsonl", [{"step": "init", "device": "NVIDIA H200"}, factory])
    found = {row.figure: row for row in targets.rows(tmp_path)[1]}
    row = found["factory path, 32 clips of 10 s (ok rows/hour)"]
    assert row.measured == targets.fmt(3600 * 16 / 20.0) and row.verdict == "not met"


def test_the_factorys_decoder_work_is_shown_when_the_line_has_it(tmp_path):
    """The factory line's decode steps, rows a step and videos prefilled a clip reach the table; an older
    line without them adds no row."""
    factory = {"step": "factory", "clips": 32, "ok": 32, "failed": 0, "s": 40.0}
    counted = factory | {"decode_steps": 1001, "rows_per_step": 26.7, "video_prefills_per_clip": 8.59}
    write(tmp_path, "h-foley.jsonl", [{"step": "init", "device": "NVIDIA H200"}, counted])
    found = {row.figure: row.measured for row in targets.rows(tmp_path)[1]}
    assert found["factory path: decode steps, live rows a step"] == "1,001 steps, 26.70 rows a step"
    assert found["factory path: videos prefilled a clip"] == "8.59"
    write(tmp_path, "h-foley.jsonl", [{"step": "init", "device": "NVIDIA H200"}, factory])
    assert not any(row.figure.startswith("factory path: ") for row in targets.rows(tmp_path)[1])


def test_a_store_that_failed_leaves_the_copies_figure_and_its_error(tmp_path):
    """When the bench fell back to copies after the store failed, the batch-32 row is the copies' line,
    named so, and the failure is a row of its own."""
    error = {"step": "generate_continuous_b32_constrained", "error": "RuntimeError: no kernel | for bmm"}
    write(
        tmp_path,
        "h-foley.jsonl",
        [
            {"step": "init", "device": "NVIDIA H200"},
            error,
            decode_line("continuous", 32, 2500.0, store=False),
        ],
    )
    write(
        tmp_path, "h-baseline-plain.jsonl", [{"step": "generate", "batch": 32, "decode_tok_s_total": 400.0}]
    )
    found = {row.figure: row for row in targets.rows(tmp_path)[1]}
    copied = found["constrained decode, batch 32, continuous, prefixes copied (tok/s)"]
    assert copied.measured == targets.fmt(2500.0) and copied.verdict == "met"
    assert B32 not in found
    failed = found["failed: generate_continuous_b32_constrained"]
    assert failed.measured.startswith("RuntimeError: no kernel") and "|" not in failed.measured


def test_a_figure_whose_store_attention_fell_back_says_so(tmp_path):
    """The store's fused kernels failed their check on the card (backends/attention_check.py): the
    decoder ran its small ops, and the batch-32 figure says so rather than passing for the default."""
    line = decode_line("continuous", 32, 2100.0) | {
        "attention_kernels": True,
        "attention_ran": "small ops",
        "attention_failed": {"fused kernels": "RuntimeError in a decode step: attn_bias is not aligned"},
    }
    write(tmp_path, "h-foley.jsonl", [{"step": "init", "device": "NVIDIA H200"}, line])
    found = {row.figure: row for row in targets.rows(tmp_path)[1]}
    assert B32 not in found
    fell_back = "constrained decode, batch 32, continuous, store attention as small ops"
    assert [figure for figure in found if figure.startswith(fell_back)]


B1 = "constrained decode, batch 1, continuous (tok/s)"


@pytest.mark.parametrize(
    ("tok_s", "plain_b1", "verdict"),
    [
        (150.0, 18.0, "met"),  # 150 tok/s and over 8x 18 (144)
        (149.0, 18.0, "not met"),  # under 150 on an H200
        (200.0, 30.0, "not met"),  # under 8x its own batch-1 baseline (240)
    ],
)
def test_batch_1_is_judged_against_the_batch_1_baseline(tmp_path, tok_s, plain_b1, verdict):
    """The batch-32 baseline (here 10 tok/s, which every figure would pass at 8x) is not batch 1's."""
    write(
        tmp_path,
        "h-foley.jsonl",
        [{"step": "init", "device": "NVIDIA H200"}, decode_line("continuous", 1, tok_s)],
    )
    plain = [
        {"step": "generate", "batch": 32, "decode_tok_s_total": 10.0},
        {"step": "generate", "batch": 1, "decode_tok_s_total": plain_b1},
        {"step": "generate", "batch": 8},  # cut short: no figure, and no crash
    ]
    write(tmp_path, "h-baseline-plain.jsonl", plain)
    assert verdicts(tmp_path)[B1] == verdict


@pytest.mark.parametrize(("peak", "verdict"), [(74.0, "met"), (75.0, "not met")])
def test_peak_memory_must_fit_an_80_gb_card(tmp_path, peak, verdict):
    lines = [{"step": "init", "device": "NVIDIA H100"}, {"step": "lora_step", "i": 0, "peak_gib": peak}]
    lines.append(decode_line("continuous", 32, 100.0) | {"peak_gib": 20.0})
    write(tmp_path, "h-foley.jsonl", lines)
    assert verdicts(tmp_path)["peak GPU memory, our paths (GiB)"] == verdict


def test_each_row_reads_its_own_decoder_and_the_constrained_line(tmp_path):
    """A free continuous line first, then the constrained one, then the static decoder's: each row shows
    its own line's figure."""
    lines = [
        {"step": "init", "device": "NVIDIA H200"},
        decode_line("continuous", 32, 9999.0, constrained=False),
        decode_line("continuous", 32, 3000.0),
        decode_line("static", 32, 1234.0),
    ]
    write(tmp_path, "h-foley.jsonl", lines)
    found = {row.figure: row.measured for row in targets.rows(tmp_path)[1]}
    assert found[B32] == targets.fmt(3000.0)
    assert found["constrained decode, batch 32, static (tok/s)"] == targets.fmt(1234.0)


def test_a_small_factory_run_is_shown_not_judged(tmp_path):
    factory = {"step": "factory", "clips": 2, "ok": 2, "failed": 0, "s": 1.0}
    write(tmp_path, "h-foley.jsonl", [{"step": "init", "device": "NVIDIA H200"}, factory])
    found = {row.figure: row for row in targets.rows(tmp_path)[1]}
    row = found["factory path, 2 clips of 10 s (ok rows/hour)"]
    assert row.measured == targets.fmt(7200.0) and row.verdict == "" and row.target == ""


def test_two_calls_in_one_folder_exit_2_and_a_baseline_is_read_under_its_cards_name(tmp_path):
    write(tmp_path, "NVIDIA-H200-foley.jsonl", [decode_line("continuous", 32, 3000.0)])
    write(
        tmp_path,
        "NVIDIA-H100-baseline-plain.jsonl",
        [{"step": "generate", "batch": 32, "decode_tok_s_total": 1.0}],
    )
    found = {row.figure: row for row in targets.rows(tmp_path)[1]}
    assert found[B32].baseline == "not measured"  # the H100's baseline is not this call's
    write(tmp_path, "NVIDIA-H100-foley.jsonl", [decode_line("continuous", 32, 2000.0)])
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "targets.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "NVIDIA-H100-foley.jsonl" in done.stderr and "Traceback" not in done.stderr


def test_skipped_and_failed_attention_parts_are_rows_of_their_own(tmp_path):
    """A short call (ONLY=...) skips the attention mixes, and a failed mix logs its error: neither is
    read as a mix's figures."""
    write(
        tmp_path,
        "NVIDIA-H100-foley.jsonl",
        [
            {"step": "attention", "skipped": True, "why": "not in ONLY"},
            {"step": "attention", "error": "OutOfMemoryError: CUDA out of memory", "where": []},
            decode_line("continuous", 32, 900.0),
        ],
    )
    found = {row.figure: row for row in targets.rows(tmp_path)[1]}
    assert found["skipped: attention"].measured == "not measured (not in ONLY)"
    assert "OutOfMemoryError" in found["failed: attention"].measured
    assert not [figure for figure in found if figure.startswith("attention,")]


@pytest.mark.parametrize(("slots", "note"), [(2, True), (32, False), (None, False)])
def test_a_batch_decoded_a_few_rows_at_a_time_says_so(tmp_path, slots, note):
    """The H100's first call decoded batch 32 two rows at a time (its cache got 2 rows): the row says
    so, since its figure is not batch 32's."""
    line = decode_line("continuous", 32, 191.0) | {"slots": slots}
    write(tmp_path, "NVIDIA-H100-foley.jsonl", [line])
    figures = [row.figure for row in targets.rows(tmp_path)[1]]
    fewer = B32.replace(" (tok/s)", f", {slots} rows at a time (tok/s)")
    assert (fewer in figures) is note and (B32 in figures) is not note


def test_the_fast_decoder_is_shown_beside_the_same_runs_generate(tmp_path):
    """When the plain baseline's part was cut off, the run's own generate still gives a same-call
    ratio (an informative row: both figures count their prefill, unlike the plain baseline's)."""
    write(
        tmp_path,
        "NVIDIA-H100-foley.jsonl",
        [decode_line("generate", 32, 200.0), decode_line("continuous", 32, 800.0)],
    )
    found = {row.figure: row for row in targets.rows(tmp_path)[1]}
    row = found[
        "constrained decode, batch 32: continuous vs this run's generate (tok/s, prefill included in both)"
    ]
    assert row.measured == "800 vs 200 (4.0x)" and row.verdict == ""
    assert found[B32].verdict == "not measured"  # no plain baseline: the target is not judged on this


def test_the_profiled_step_shows_its_kernel_time_against_its_wall_time(tmp_path):
    """The profile line's kernel time per step beside its wall time, and its heaviest kernels by name
    (a "|" in a kernel's name would break the markdown table)."""
    profile = {
        "step": "profile",
        "batch": 32,
        "busy_ms_per_step": 12.5,
        "profiled_ms_per_step": 27.0,
        "top": [
            {"name": "sm90_xmma_gemm_bf16|tn", "ms_per_step": 5.0},
            {"name": "triton_per_fused_attention", "ms_per_step": 3.25},
        ],
    }
    write(tmp_path, "NVIDIA-H100-foley.jsonl", [profile])
    (row,) = [r for r in targets.rows(tmp_path)[1] if r.figure.startswith("decode step profiled")]
    assert row.measured.startswith("12.5 / 27.0; ") and "|" not in row.measured
    assert "sm90_xmma_gemm_bf16/tn 5.00" in row.measured and "triton_per_fused_attention 3.25" in row.measured


def test_the_opaque_attention_is_shown_beside_the_traced_one_and_never_judged(tmp_path):
    """The bench's opaque-attention lines (after the static decoder) are an A/B beside the traced
    decoder's: the targets read the traced line, which came first, whichever is faster; the compile is
    compared between each variant's first line (the traced one compiled at batch 1, the opaque one at
    batch 32), not between two lines of one batch."""
    traced_b1 = decode_line("continuous", 1, 108.0) | {"warmup_s": 144.0}
    traced = decode_line("continuous", 32, 850.0) | {"warmup_s": 9.5}
    opaque = decode_line("continuous", 32, 2500.0) | {"warmup_s": 40.0, "opaque_attention": True}
    opaque_b1 = decode_line("continuous", 1, 90.0) | {"warmup_s": 1.0, "opaque_attention": True}
    write(tmp_path, "NVIDIA-H100-foley.jsonl", [traced_b1, traced, opaque, opaque_b1])
    found = {row.figure: row for row in targets.rows(tmp_path)[1]}
    assert found[B32].measured == "850"
    assert found["continuous, batch 32: attention opaque vs traced (tok/s)"].measured == "2,500 vs 850"
    assert found["continuous, batch 1: attention opaque vs traced (tok/s)"].measured == "90.00 vs 108"
    compile_row = found["continuous: attention opaque vs traced, first call (s: compile, recording, decode)"]
    assert compile_row.measured == "40.0 vs 144.0" and compile_row.verdict == ""


def test_the_small_ops_attention_is_shown_beside_the_fused_kernels_and_never_judged(tmp_path):
    """The bench's small-ops lines (`attention_kernels: false`, after the static decoder) are an A/B
    beside the default fused kernels: the targets read the default line even when the small ops are
    faster, the compile is compared between each variant's first line, and the attention mix shows
    both ways of reading the store."""
    fused_b1 = decode_line("continuous", 1, 180.0) | {"warmup_s": 60.0, "attention_kernels": True}
    fused = decode_line("continuous", 32, 1900.0) | {"warmup_s": 9.0, "attention_kernels": True}
    small = decode_line("continuous", 32, 2100.0) | {"warmup_s": 150.0, "attention_kernels": False}
    mix = {
        "step": "attention",
        "live_rows": 32,
        "videos": 1,
        "copy_ms": 0.531,
        "store_ms": 0.315,
        "speedup": 1.69,
        "kernels_ms": 0.12,
        "kernels_speedup": 4.43,
    }
    write(tmp_path, "NVIDIA-H100-foley.jsonl", [mix, small, fused_b1, fused])  # small first: still not read
    found = {row.figure: row for row in targets.rows(tmp_path)[1]}
    assert found[B32].measured == "1,900"
    ab = found["continuous, batch 32: attention fused kernels vs small ops (tok/s)"]
    assert ab.measured == "1,900 vs 2,100" and ab.verdict == ""
    assert "continuous, batch 1: attention fused kernels vs small ops (tok/s)" not in found  # no b1 small ops
    compile_figure = (
        "continuous: attention fused kernels vs small ops, first call (s: compile, recording, decode)"
    )
    first = found[compile_figure]
    assert first.measured == "60.0 vs 150.0"
    row = found["attention, 32 rows / 1 videos: copies -> store (small ops; fused kernels) (ms)"]
    assert row.measured == "0.531 -> 0.315 (1.69x); 0.12 (4.43x)"


def test_questions_joining_alone_are_shown_beside_the_join_prefill_and_never_judged(tmp_path):
    """The bench's line with every question prefilled alone (`join_together: false`) is an A/B beside
    the default: the batch-32 target reads the default line, wherever the other stands."""
    alone = decode_line("continuous", 32, 850.0) | {"join_together": False}
    together = decode_line("continuous", 32, 1500.0) | {"join_together": True}
    write(tmp_path, "NVIDIA-H100-foley.jsonl", [alone, together])
    found = {row.figure: row for row in targets.rows(tmp_path)[1]}
    assert found[B32].measured == "1,500"
    ab = found["continuous, batch 32: questions joining together vs alone (tok/s)"]
    assert ab.measured == "1,500 vs 850" and ab.verdict == ""
