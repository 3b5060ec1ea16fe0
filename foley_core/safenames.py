"""Names and paths made from untrusted values (manifest ids, row values, URIs).

A manifest is input, and input can hold `../../etc/x`, `a/b`, `CON`, 300 characters, or two ids that
differ only in case. None of them may reach a file path raw:

- `safe_name(value)`: a file-name stem that is safe on every file system and object store, stable
  (the same value always gives the same name) and collision-free, also on case-insensitive file systems.
- `safe_join(folder, name)`: joins and refuses any result outside `folder` (local paths and fsspec URIs).
- `redact_uri(uri)`: a URI fit for an error message: credentials and query values replaced by `***`.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from urllib.parse import unquote

from v2t_foley.foley_core.errors import InputError

HASH_CHARS = 16  # 64 bits of sha256: a collision between two ids of one manifest is not a concern
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HASHED = re.compile(rf"-[0-9a-f]{{{HASH_CHARS}}}$")
# Device names Windows reserves whatever the extension (`con.png` too), compared case-insensitively.
_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{k}" for k in range(10)] + [f"lpt{k}" for k in range(10)]
)


class UnsafePathError(InputError):
    """A name would put a file outside the folder it belongs in. Build names with `safe_name`."""


def safe_name(value: str, *, max_len: int = 120) -> str:
    """A file-name stem for `value`, made of [A-Za-z0-9._-] only, at most `max_len` characters.

    A value that is already a safe, lowercase, short, non-reserved name is returned as it is. Any other
    gets a readable sanitized part plus `-` and a hash of the exact value, so:
    - distinct values give distinct names, also compared case-insensitively (`Clip` and `clip` differ
      after the hash; an unhashed name never ends like a hashed one, since such a value is hashed too);
    - the name never starts with `.` or `-`, and is never `.`, `..`, empty, or a Windows device name.
    """
    if max_len < HASH_CHARS + 2:
        raise ValueError(f"max_len must be at least {HASH_CHARS + 2}, got {max_len}")
    if _is_plain(value, max_len):
        return value
    ascii_text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    readable = _UNSAFE.sub("_", ascii_text).strip("._-") or "id"
    readable = readable[: max_len - HASH_CHARS - 1].rstrip("._-") or "id"
    if readable.split(".", 1)[0].lower() in _RESERVED:  # `con.txt-<hash>` is still a device on Windows
        readable = "_" + readable[: max_len - HASH_CHARS - 2]
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    return f"{readable}-{digest}"


def _is_plain(value: str, max_len: int) -> bool:
    return (
        0 < len(value) <= max_len
        and not _UNSAFE.search(value)
        and value == value.lower()
        and value[0] not in ".-"
        and not value.endswith(".")
        and value.split(".", 1)[0] not in _RESERVED
        and not _HASHED.search(value)
    )


def safe_join(folder: str, name: str) -> str:
    """`folder` + `/` + `name`, refusing any result that is not inside `folder`.

    `name` may hold `/`-separated parts, but none may be empty, `.` or `..`, and it may not hold `\\`,
    a NUL, or start with `/`: object stores take keys literally, so the check is on the parts, not on
    a normalized path. A local folder is also checked after resolving symlinks, so a link inside the
    folder cannot carry a write outside it. Works for local paths and fsspec URIs (s3://bucket/prefix).
    """
    parts = name.split("/")
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or "://" in name
    ):
        raise UnsafePathError(
            f"{name!r} would not stay inside {redact_uri(folder)}; file names made from ids must come"
            " from foley_core.safenames.safe_name"
        )
    if "://" in folder:
        return f"{folder.rstrip('/')}/{name}"
    joined = os.path.join(folder, *parts)
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(joined)]) != root:
        raise UnsafePathError(
            f"{name!r} resolves outside {folder} (a symbolic link inside it points elsewhere);"
            " remove the link or write to another folder"
        )
    return joined


_QUERY_VALUE = re.compile(r"=[^&]*")
_PORT = re.compile(r"^[^:]*:\d*$")


def redact_uri(uri: str) -> str:
    """`uri` with its user info (`key:secret@`) and every query value replaced by `***`.

    Credentials sometimes hold `/` (AWS secret keys), so user info is taken as everything up to the
    first `@` whenever the part before the first `/` holds a `:` that is not a port; a key that merely
    holds `:` and `@` is over-redacted, which is the safe way round for an error message. Local paths
    come back unchanged.
    """
    if "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    rest, question, query = rest.partition("?")
    userinfo = _userinfo(rest)
    if userinfo is not None:
        rest = "***@" + rest[len(userinfo) + 1 :]
    if question:
        query = _QUERY_VALUE.sub("=***", query) if "=" in query else "***"
    return f"{scheme}://{rest}{question}{query}"


def _userinfo(rest: str) -> str | None:
    """The `key:secret` before `@` in a URI without its scheme and query, or None."""
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        return rest[: authority.rindex("@")]
    if "@" in rest and ":" in authority and not _PORT.match(authority):
        return rest.split("@", 1)[0]
    return None


def uri_secrets(uri: str) -> list[str]:
    """The secret pieces of `uri` (user info and its parts, query values, also %-decoded), longest
    first: a library's error message may quote any of them, whole or cut at a `:` or `/`."""
    if "://" not in uri:
        return []
    rest, _, query = uri.split("://", 1)[1].partition("?")
    found: set[str] = set()
    userinfo = _userinfo(rest)
    if userinfo:
        found.add(userinfo)
        for part in re.split(r"[:/]", userinfo):
            found.add(part)
    for pair in query.split("&") if query else ():
        found.add(pair.split("=", 1)[-1])
    found |= {unquote(piece) for piece in found}
    # a piece of 3 characters or fewer would redact ordinary words; such a secret protects nothing anyway
    return sorted((p for p in found if len(p) > 3), key=len, reverse=True)
