"""Prompt templates: validated on load, rendered with clear errors, versioned by content."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from v2t_foley.foley_core.errors import TemplateError
from v2t_foley.foley_core.prompts import CHAIN_STEPS, default_prompt_dir, load_prompts


@pytest.fixture
def prompt_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "prompts"
    shutil.copytree(default_prompt_dir(), folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return folder


def test_shipped_prompts_load_and_render():
    prompts = load_prompts()
    assert set(prompts.templates) == set(CHAIN_STEPS)
    text = prompts.render(
        "identify", duration="4.00", frame_times="frame 1 at 0.00 s", n_frames=1, max_events=8
    )
    assert "frame 1 at 0.00 s" in text and "$" not in text
    assert len(prompts.version) == 12


def test_version_tracks_template_text(prompt_copy: Path):
    before = load_prompts(prompt_copy)
    assert before.version == load_prompts().version  # same texts, same version, wherever they live
    (prompt_copy / "reason.txt").write_text((prompt_copy / "reason.txt").read_text() + "\nBe brief.")
    after = load_prompts(prompt_copy)
    assert after.version != before.version
    assert after.step_version("reason") != before.step_version("reason")
    assert after.step_version("identify") == before.step_version("identify")


def test_unknown_variable_names_file_and_variable(prompt_copy: Path):
    path = prompt_copy / "identify.txt"
    path.write_text(path.read_text() + "\nThe film is called $title.")
    with pytest.raises(TemplateError, match=r"identify\.txt: unknown variable \$title"):
        load_prompts(prompt_copy)


def test_missing_required_variable(prompt_copy: Path):
    (prompt_copy / "reason.txt").write_text("Describe the event between $event_start and $event_end.")
    with pytest.raises(TemplateError, match=r"never uses \$event_summary"):
        load_prompts(prompt_copy)


def test_missing_template_file(prompt_copy: Path):
    (prompt_copy / "synthesize.txt").unlink()
    with pytest.raises(TemplateError, match=r"synthesize\.txt: template missing"):
        load_prompts(prompt_copy)


def test_lone_dollar_is_reported_with_its_line(prompt_copy: Path):
    path = prompt_copy / "repair.txt"
    path.write_text("Error: $error\nAnswer: $answer\nIt costs $ 5.")
    with pytest.raises(TemplateError, match=r"repair\.txt:3: a lone"):
        load_prompts(prompt_copy)


def test_render_without_a_value_is_an_error():
    prompts = load_prompts()
    with pytest.raises(TemplateError, match=r"no value given for \$answer"):
        prompts.render("repair", error="x", schema="{}")


def test_missing_folder():
    with pytest.raises(TemplateError, match="prompt folder not found"):
        load_prompts("/nonexistent/prompts")
