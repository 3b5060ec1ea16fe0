"""v2t-foley's one import name. Its subpackages are the repository's top-level folders, as the design
card lays them out: `v2t_foley.foley_core`, `.flows`, `.tasks`, `.training`, `.prompts`.

An installed wheel holds them inside this package (pyproject's package-dir maps each folder). In a
checkout (an editable install, or tests run from the repository root) they stay where they are, beside
this folder, and are found through this package's path. So installing v2t-foley never adds or shadows a
top-level `flows`, `tasks`, `training` or `prompts` of another distribution.
"""

from pathlib import Path

_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "foley_core").is_dir():
    __path__.append(str(_checkout))
