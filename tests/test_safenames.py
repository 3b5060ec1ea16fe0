"""No manifest or row value reaches a file path raw (issue #14): safe names, guarded joins, redaction.

The writes go to a real local folder and to a prefix on moto's S3 server on 127.0.0.1; afterwards the
whole bucket and the folder's parent are listed, so anything that landed outside is seen.
"""

from __future__ import annotations

import os
import re

import fsspec
import pytest

from tests.servers import moto_bucket
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.safenames import UnsafePathError, redact_uri, safe_join, safe_name

NASTY = [
    "../../x",
    "../../../etc/passwd",
    "a/b",
    "a\\b",
    "/abs/path",
    "CON",
    "con",
    "con.txt",
    "Nul",
    "lpt1.png",
    ".",
    "..",
    "",
    " ",
    ".hidden",
    "-rf",
    "trailing.",
    "x" * 300,
    "X" * 300,
    "x" * 299 + "y",
    "clip",
    "Clip",
    "CLIP",
    "clip-0123456789abcdef",  # looks like a hashed name: must not collide with one
    "café",
    "cafe\u0301",  # the same word, decomposed: a different id
    "日本語",
    "한국어",
    "a:b",
    "a*b?c",
    "a\x00b",
    "emoji-🎬",
    "tab\there",
    "s3://bucket/key",
    "%2e%2e%2fx",
    "plain_id-01",
]


def test_names_are_safe_stable_and_distinct_case_insensitively():
    names = [safe_name(v) for v in NASTY]
    assert names == [safe_name(v) for v in NASTY]  # stable
    assert len({n.lower() for n in names}) == len(NASTY)  # distinct, even on a case-insensitive disk
    for value, name in zip(NASTY, names, strict=True):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name), (value, name)
        assert 0 < len(name) <= 120 and name not in (".", "..")
        assert name[0] not in ".-" and not name.endswith(".")
        assert name.split(".")[0].lower() not in {"con", "prn", "aux", "nul", "com1", "lpt1"}
    # a value that is already a safe lowercase name stays readable as it is
    assert safe_name("clip") == "clip" and safe_name("plain_id-01") == "plain_id-01"
    assert safe_name("Clip").startswith("Clip-") and safe_name("../../x").startswith("x-")


def test_max_len_is_honoured_and_still_distinct():
    long = ["a" * 200 + str(k) for k in range(20)]
    names = [safe_name(v, max_len=40) for v in long]
    assert all(len(n) <= 40 for n in names) and len(set(names)) == len(long)
    with pytest.raises(ValueError, match="max_len"):
        safe_name("x", max_len=5)


@pytest.mark.parametrize(
    "name",
    ["../x", "a/../../x", "/etc/passwd", "a\\..\\x", "", ".", "..", "a//b", "a/./b", "x\x00", "s3://b/k"],
)
def test_safe_join_refuses_escapes(tmp_path, name):
    with pytest.raises(UnsafePathError, match="would not stay inside") as caught:
        safe_join(str(tmp_path), name)
    assert isinstance(caught.value, InputError)
    with pytest.raises(UnsafePathError):
        safe_join("s3://bucket/prefix", name)


def test_safe_join_joins_inside(tmp_path):
    assert safe_join(str(tmp_path), "a.png") == str(tmp_path / "a.png")
    assert safe_join(str(tmp_path), "sub/a.png") == str(tmp_path / "sub" / "a.png")
    assert safe_join("s3://bucket/prefix/", "a.png") == "s3://bucket/prefix/a.png"


def test_safe_join_refuses_a_symlink_out(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        safe_join(str(folder), "link/x.png")


def _write_all(folder: str) -> list[str]:
    """One file per nasty id into `folder`, as the project names them."""
    fs, _ = fsspec.core.url_to_fs(folder)
    written = []
    for value in NASTY:
        target = safe_join(folder, f"{safe_name(value)}.json")
        with fs.open(target, "w") as handle:
            handle.write(value.encode("unicode_escape").decode())
        written.append(target)
    return written


def test_a_file_per_nasty_id_lands_in_the_local_folder(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    written = _write_all(str(folder))
    assert sorted(os.listdir(folder)) == sorted(os.path.basename(w) for w in written)
    assert len(os.listdir(folder)) == len(NASTY)
    everything = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")}
    assert everything == {"out"} | {f"out/{os.path.basename(w)}" for w in written}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    with moto_bucket(tmp_path_factory.mktemp("moto") / "moto.log", "names", patch) as bucket:
        yield bucket.fs
    patch.undo()


def test_a_file_per_nasty_id_lands_under_the_s3_prefix(s3):
    written = _write_all("s3://names/run/plots")
    s3.invalidate_cache()
    keys = sorted(s3.find("names"))
    assert keys == sorted(w.removeprefix("s3://") for w in written)
    assert all(k.startswith("names/run/plots/") and k.count("/") == 3 for k in keys)
    assert len(keys) == len(NASTY)


REDACT = [
    ("s3://AKIAKEY:SeCrEt@bucket/x.mp4", "s3://***@bucket/x.mp4"),
    ("s3://AKIAKEY:Se/Cr+Et@bucket/x.mp4", "s3://***@bucket/x.mp4"),  # AWS secrets can hold `/`
    ("https://user:pass@host/x.mp4", "https://***@host/x.mp4"),
    ("https://token@host/x.mp4", "https://***@host/x.mp4"),
    (
        "https://b.s3.amazonaws.com/x.mp4?X-Amz-Signature=abc123&X-Amz-Credential=AKIA%2F&token=zz",
        "https://b.s3.amazonaws.com/x.mp4?X-Amz-Signature=***&X-Amz-Credential=***&token=***",
    ),
    ("https://host:8080/clips/a@2x.mp4", "https://host:8080/clips/a@2x.mp4"),  # a port is no secret
    ("/data/a@b:c.mp4", "/data/a@b:c.mp4"),  # local paths hold no credentials
]


@pytest.mark.parametrize(("uri", "shown"), REDACT)
def test_redact_uri(uri, shown):
    assert redact_uri(uri) == shown
    for secret in ("SeCrEt", "Cr+Et", "pass", "abc123", "zz", "AKIA%2F"):
        assert secret not in redact_uri(uri)


def test_eval_plots_are_named_safely(tmp_path):
    from v2t_foley.foley_core.evalplot import plot_path, plot_video
    from v2t_foley.foley_core.schema import Cue, FoleyScript

    out = tmp_path / "plots"
    script = FoleyScript(fx=[Cue.at(0.5, 0.6, "A click.")])
    for vid in ("../../escaped", "a/b", "Clip", "clip"):
        plot_video(vid, script, None, plot_path(out, vid))
    assert {p.parent for p in tmp_path.rglob("*.png")} == {out}
    assert len(list(out.glob("*.png"))) == 4


def test_find_video_compares_names_never_patterns(tmp_path):
    from v2t_foley.foley_core.evaluation import find_video

    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a1.mp4").write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    assert find_video(videos, "a1") == str(videos / "a1.mp4")
    assert find_video(videos, "a[0-9]") is None  # a glob would have matched a1.mp4
    assert find_video(videos, "../secret") is None
    assert find_video(videos, "*") is None
    (videos / f"{safe_name('A/B')}.mp4").write_bytes(b"x")
    assert find_video(videos, "A/B") == str(videos / f"{safe_name('A/B')}.mp4")


def test_only_plain_lowercase_ids_keep_their_name():
    assert {v for v in NASTY if safe_name(v) == v} == {"clip", "plain_id-01"}
