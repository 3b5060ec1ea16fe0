"""The exceptions v2t-foley raises on purpose.

Two families, because callers treat them differently:
- `InputError`: the user's input is wrong (a bad video, a bad manifest, a broken template, an unknown
  model). Nothing transient; retrying cannot help. The CLI prints the message and exits with code 2,
  and the factory records a `failed` row naming the reason.
- everything else under `FoleyError`: the system failed (a model that produced garbage even after a
  repair, a backend that is down). `TransientBackendError` marks the faults worth a retry.

Every message names the thing at fault and says what to do.
"""

from __future__ import annotations


class FoleyError(Exception):
    """Base class of every error v2t-foley raises on purpose."""


class InputError(FoleyError):
    """The input is wrong; fix it and run again. Exit code 2 in the CLI."""


class ManifestError(InputError):
    """A manifest cannot be read, or lacks what every manifest needs."""


class ManifestRowError(InputError):
    """One manifest row is unusable; the other rows still run."""


class TemplateError(InputError):
    """A prompt template is missing, unreadable, or uses an unknown or missing variable."""


class ModelNotFoundError(InputError):
    """A model id, model folder or adapter path does not resolve to a loadable model."""


class ChainError(FoleyError):
    """A chain step could not get a usable answer from the model (after extraction and one repair)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


class BackendError(FoleyError):
    """The model backend failed in a way a retry will not fix (4xx, a bad config)."""


class TransientBackendError(BackendError):
    """A fault worth retrying: CUDA out of memory, a dropped connection, an HTTP 5xx."""
