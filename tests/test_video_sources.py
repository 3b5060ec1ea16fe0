"""Where videos may come from (issue #14c/d): the protocols fetched, the allowed roots, and error texts
that never show credentials. Remote videos come from moto's S3 server on 127.0.0.1 and from a real
HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from tests.servers import moto_bucket
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.video import (
    DisallowedSourceError,
    VideoError,
    VideoFetchError,
    VideoNotFoundError,
    open_video,
    sha256_file,
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    with moto_bucket(tmp_path_factory.mktemp("moto") / "moto.log", "clips", patch) as bucket:
        yield bucket.fs
    patch.undo()


@contextlib.contextmanager
def http_folder(folder: Path) -> Iterator[str]:
    """A plain HTTP file server for `folder` on 127.0.0.1; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_s3_video_is_fetched_and_hashed(s3, scene_video, tmp_path):
    s3.put_file(str(scene_video), "clips/a/scene.mp4")
    video = open_video("s3://clips/a/scene.mp4", cache_dir=tmp_path)
    assert video.sha256 == sha256_file(scene_video)
    assert video.path.parent == tmp_path and video.path.read_bytes() == scene_video.read_bytes()
    assert len(video.uniform(8)) == 8
    with pytest.raises(VideoNotFoundError, match=r"s3://clips/a/other\.mp4"):
        open_video("s3://clips/a/other.mp4", cache_dir=tmp_path)


@pytest.mark.parametrize(
    "uri",
    [
        "memory://bucket/clips/scene.mp4",
        "ftp://host/clip.mp4",
        "sftp://host/clip.mp4",
        "simplecache::s3://clips/a/scene.mp4",
        "s3a://clips/a/scene.mp4",
        "zip://clip.mp4::file:///tmp/x.zip",
    ],
)
def test_other_protocols_are_refused(uri, tmp_path):
    with fsspec.open("memory://bucket/clips/scene.mp4", "wb") as handle:
        handle.write(b"not fetched anyway")
    with pytest.raises(DisallowedSourceError, match=r"local paths, file:// and .*s3://") as caught:
        open_video(uri, cache_dir=tmp_path)
    assert isinstance(caught.value, InputError) and caught.value.reason == "disallowed_source"
    assert list(tmp_path.iterdir()) == []  # nothing was copied


@pytest.fixture
def rooted(scene_video, tmp_path) -> dict[str, Path]:
    """An allowed root with a video, a link inside it pointing out, and a video outside it."""
    root = tmp_path / "root"
    root.mkdir()
    inside = root / "in.mp4"
    inside.write_bytes(scene_video.read_bytes())
    outside = tmp_path / "secret" / "out.mp4"
    outside.parent.mkdir()
    outside.write_bytes(scene_video.read_bytes())
    (root / "link.mp4").symlink_to(outside)
    return {"root": root, "inside": inside, "outside": outside}


def test_local_paths_inside_the_roots_open(rooted):
    roots = (str(rooted["root"]),)
    assert open_video(str(rooted["inside"]), allow_roots=roots).info.frame_count > 0
    assert open_video(f"file://{rooted['inside']}", allow_roots=roots).info.frame_count > 0
    dotted = f"{rooted['root']}/sub/../in.mp4"  # `..` that stays inside is fine
    (rooted["root"] / "sub").mkdir()
    assert open_video(dotted, allow_roots=roots).sha256 == sha256_file(rooted["inside"])
    assert open_video(str(rooted["inside"]), allow_roots=(f"file://{rooted['root']}",)).sha256
    assert open_video(str(rooted["outside"])).info.frame_count > 0  # no roots given: no restriction


@pytest.mark.parametrize("how", ["outside", "dotdot", "symlink", "file-uri", "prefix-sibling"])
def test_local_paths_outside_the_roots_are_refused(rooted, how, tmp_path):
    root = rooted["root"]
    sibling = tmp_path / "root2" / "x.mp4"  # shares the root's name as a string prefix
    sibling.parent.mkdir()
    sibling.write_bytes(rooted["inside"].read_bytes())
    uri = {
        "outside": str(rooted["outside"]),
        "dotdot": f"{root}/../secret/out.mp4",
        "symlink": str(root / "link.mp4"),
        "file-uri": f"file://{rooted['outside']}",
        "prefix-sibling": str(sibling),
    }[how]
    with pytest.raises(DisallowedSourceError, match="outside the allowed roots") as caught:
        open_video(uri, allow_roots=(str(root),))
    assert caught.value.reason == "disallowed_source"


def test_uri_roots_restrict_remote_uris(s3, scene_video, tmp_path):
    s3.put_file(str(scene_video), "clips/ok/scene.mp4")
    s3.put_file(str(scene_video), "clips/private/scene.mp4")
    roots = ("s3://clips/ok", str(tmp_path))
    assert open_video("s3://clips/ok/scene.mp4", cache_dir=tmp_path, allow_roots=roots).sha256
    for uri in ("s3://clips/private/scene.mp4", "s3://clips/ok/../private/scene.mp4", "s3://clips/okx/a.mp4"):
        with pytest.raises(DisallowedSourceError, match=r"outside the allowed roots \(s3://clips/ok"):
            open_video(uri, cache_dir=tmp_path, allow_roots=roots)
    # local roots only: remote URIs are governed by the protocol list alone
    assert open_video("s3://clips/private/scene.mp4", cache_dir=tmp_path, allow_roots=(str(tmp_path),))


SECRETS = ("AKIAEXAMPLE", "wJalr/XUtnFEMI+K7MDENG", "hunter2", "deadbeef0123", "tok3n")


def assert_no_secret(error: BaseException) -> None:
    text = " | ".join([str(error), getattr(error, "uri", ""), getattr(error, "detail", "")])
    for secret in SECRETS:
        assert secret not in text, text
    assert "***" in text


def test_credentials_in_s3_uris_never_reach_the_error(s3, tmp_path):
    uri = "s3://AKIAEXAMPLE:wJalr/XUtnFEMI+K7MDENG@clips/a/missing.mp4"
    with pytest.raises(VideoError) as caught:
        open_video(uri, cache_dir=tmp_path)
    assert_no_secret(caught.value)


def test_credentials_in_http_uris_never_reach_the_error(scene_video, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "clip.mp4").write_bytes(scene_video.read_bytes())
    with http_folder(served) as base:
        host = base.removeprefix("http://")
        # a real fetch over HTTP works, and its query string is not part of what is fetched
        assert open_video(f"{base}/clip.mp4", cache_dir=tmp_path / "cache").sha256 == sha256_file(scene_video)
        for uri in (
            f"http://user:hunter2@{host}/missing.mp4",
            f"{base}/missing.mp4?X-Amz-Signature=deadbeef0123&X-Amz-Credential=AKIAEXAMPLE&token=tok3n",
        ):
            with pytest.raises((VideoNotFoundError, VideoFetchError)) as caught:
                open_video(uri, cache_dir=tmp_path / "cache")
            assert_no_secret(caught.value)


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://AKIAEXAMPLE:hunter2@host/x.mp4",
        "memory://bucket/x.mp4?token=tok3n",
        "https://user:hunter2@example.invalid/x.mp4?X-Amz-Signature=deadbeef0123",
    ],
)
def test_refusals_and_unreachable_hosts_are_redacted(uri, tmp_path):
    with pytest.raises(VideoError) as caught:
        open_video(uri, cache_dir=tmp_path, allow_roots=("s3://only/here",))
    assert_no_secret(caught.value)


def test_decoder_errors_name_the_uri_redacted(tmp_path):
    """Errors raised after the fetch (the probe's) redact the URI they name too."""
    from v2t_foley.foley_core.video import NotAVideoError
    from v2t_foley.foley_core.video.probe import probe

    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    with pytest.raises(NotAVideoError) as caught:
        probe(text, "https://user:hunter2@host/notes.mp4?token=tok3n")
    assert_no_secret(caught.value)
    assert "host/notes.mp4" in str(caught.value)
