"""The distribution as users install it: a wheel built from this checkout, installed (not editable) into
a fresh virtual environment beside other distributions' top-level `flows`, `tasks` and `prompts`
(stand-ins this test builds). It adds one import name, `v2t_foley`; the others stay unharmed; `foley
smoke` and `foley build-dataset --demo` run from the installed wheel alone.

The environment sees the system's site-packages for the heavy dependencies (torch, transformers, ...),
which this machine cannot download again; the wheel itself and the stand-ins are installed into it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
STANDINS = ("flows", "tasks", "prompts")


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def standin(folder: Path, name: str) -> Path:
    """A distribution whose import package is `name`, as an unrelated project on the index might be."""
    project = folder / f"standin-{name}"
    (project / name).mkdir(parents=True)
    (project / name / "__init__.py").write_text(f'STANDIN = "{name}"\n')
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "standin-{name}"\nversion = "1.0"\n'
        f'[tool.setuptools]\npackages = ["{name}"]\n'
    )
    return project


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("wheel")
    # every wheel is built here, with this environment's setuptools (the venv's own may be older)
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        root / "dist",
    ]
    run(*build, REPO)
    (wheel,) = (root / "dist").glob("v2t_foley-*.whl")
    for name in STANDINS:
        run(*build, standin(root, name))
    run(sys.executable, "-m", "venv", "--system-site-packages", root / "venv")
    python = root / "venv" / "bin" / "python"
    run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--ignore-installed",
        *(root / "dist").glob("*.whl"),
    )
    return root, wheel, python


def test_the_wheel_adds_one_import_name_and_carries_the_templates(installed):
    _, wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"v2t_foley"}
    templates = {Path(n).name for n in names if n.startswith("v2t_foley/prompts/")}
    assert {p.name for p in (REPO / "prompts").glob("*.txt")} <= templates


def test_every_package_of_the_checkout_is_in_the_wheel_and_imports(installed):
    root, _, python = installed
    folders = ("foley_core", "flows", "tasks", "training", "prompts")
    expected = sorted(
        "v2t_foley." + str(init.parent.relative_to(REPO)).replace(os.sep, ".")
        for folder in folders
        for init in (REPO / folder).rglob("__init__.py")
    )
    code = (
        "import importlib, pkgutil, v2t_foley\n"
        "found = list(pkgutil.walk_packages(v2t_foley.__path__, 'v2t_foley.'))\n"
        "for module in found:\n"
        "    if not module.name.endswith('__main__'):\n"
        "        importlib.import_module(module.name)\n"
        "print('\\n'.join(sorted(m.name for m in found if m.ispkg)))\n"
        "print('FILE', v2t_foley.__file__)\n"
    )
    out = run(python, "-c", code, cwd=root).stdout.splitlines()
    assert out[-1].startswith("FILE " + str(root / "venv"))  # the installed wheel, not this checkout
    assert sorted(out[:-1]) == expected


def test_other_top_level_packages_are_unharmed(installed):
    root, _, python = installed
    code = "import flows, tasks, prompts; print(flows.STANDIN, tasks.STANDIN, prompts.STANDIN)"
    assert run(python, "-c", code, cwd=root).stdout.split() == list(STANDINS)


def test_foley_smoke_and_the_demo_run_from_the_wheel(installed, foley_cache):
    root, _, python = installed
    foley = python.parent / "foley"
    env = {
        **os.environ,
        "FOLEY_CACHE_DIR": str(foley_cache),
        "PREFECT_HOME": str(root / "prefect"),
        "PYTHONPATH": "",
    }
    work = root / "work"
    work.mkdir()
    run(foley, "smoke", cwd=work, env=env)
    run(foley, "build-dataset", "--demo", "--demo-dir", work / "demo", cwd=work, env=env)
    code = "import datasets; d = datasets.load_dataset('demo/store'); print(sum(len(s) for s in d.values()))"
    assert int(run(python, "-c", code, cwd=work, env=env).stdout.split()[-1]) == 6


def test_every_export_format_runs_from_the_wheel(installed, foley_cache, tmp_path):
    """Formats load their module on first use; from the installed wheel (not this checkout, which a
    test run puts on sys.path) each must import under `v2t_foley` and write its files."""
    from v2t_foley.foley_core.export import FORMATS
    from v2t_foley.foley_core.schema.script import Cue, FoleyScript
    from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video

    _, _, python = installed
    env = {**os.environ, "FOLEY_CACHE_DIR": str(foley_cache), "PYTHONPATH": ""}
    video = write_scene_video(tmp_path / "clip.mp4", SceneSpec(duration=4.0, fps=25.0))
    script = tmp_path / "clip.foley.json"
    steps, wind = Cue.at(0.5, 1.5, "Steps on gravel.", 0), Cue.at(0.0, 4.0, "Wind.")
    script.write_text(FoleyScript(foley=[steps], ambience=[wind]).model_dump_json())
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from v2t_foley.foley_core.export import ExportOptions, item_from_file, run_export\n"
        "item = item_from_file(Path(sys.argv[1]), sys.argv[2])\n"
        "for name in sys.argv[3:]:\n"
        "    report = run_export([item], name, ExportOptions(out=Path('exports') / name), strict=True)\n"
        "    print(name, report.items, len(report.files))\n"
    )
    out = run(python, "-c", code, script, video, *FORMATS, cwd=tmp_path, env=env).stdout.split("\n")
    done = {line.split()[0]: line.split()[1:] for line in out if line.strip()}
    assert set(done) == set(FORMATS)
    assert all(items == "1" and int(files) >= 1 for items, files in done.values()), done
    foley = python.parent / "foley"
    run(foley, "export", script, "--video", video, "--format", "srt", "--out", "cli", cwd=tmp_path, env=env)
    assert (tmp_path / "cli" / "clip.srt").is_file()
