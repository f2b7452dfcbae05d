"""Blob names: which ones restyle accepts, which output each input owns, and local file names.

**One input, one output.** The result of input ``videos/<path>`` in style ``<style>`` is
``stylized/<path>.<style>.mp4``, and a failure's report is ``stylized/<path>.<style>.error.json``:
the input's whole name, extension included, then the style. So ``a/b.mp4`` and ``a/b.mov`` get
``a/b.mp4.udnie.mp4`` and ``a/b.mov.udnie.mp4``, and the same input in two styles gets two results.
The mapping is injective: a style name holds no ``.`` or ``/``, so stripping ``.mp4`` (or
``.error.json``) and then the last ``.<style>`` gives back the one input and style. A run writes
and deletes only these two names of its own input.

Only canonical names are accepted (:func:`canonical_blob_name`): no empty, ``.`` or ``..``
segments (``a//b.mp4`` and ``a/./b.mp4`` would otherwise be other spellings of ``a/b.mp4``), no
control characters (a newline could forge log lines), no surrounding white space, at most
1024 characters with the output's suffix. A refused name's report goes to
``<output container>/_rejected/<hash>.error.json``, a name no accepted input can produce.

Local copies are named by a hash of the blob name (:func:`local_file_name`), so any accepted blob
name fits the file system; the blob name itself is kept in the run's record and the output's
metadata.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

MAX_BLOB_NAME = 1024
"""Azure Blob Storage's longest blob name, in characters."""
REJECTED_FOLDER = "_rejected"
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SAFE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,10}$")


class BlobNameError(ValueError):
    """A blob name that restyle refuses, with the reason."""


@dataclass(frozen=True)
class BlobRef:
    """One blob: its container and its name inside the container."""

    container: str
    blob: str

    @property
    def label(self) -> str:
        """``container/blob``, as users name a blob in messages."""
        return f"{self.container}/{self.blob}"

    def __str__(self) -> str:
        return self.label


def canonical_blob_name(raw: str, container: str) -> str:
    """The blob name ``raw`` names in ``container``, if it is canonical.

    One leading ``<container>/`` is read as the container's name, so ``videos/a.mp4`` and
    ``a.mp4`` both name blob ``a.mp4`` of container ``videos``.

    Raises:
        BlobNameError: empty, control characters, surrounding white space, an empty, ``.`` or
            ``..`` segment, or longer than :data:`MAX_BLOB_NAME`.
    """
    if _CONTROL_CHARACTERS.search(raw):
        raise BlobNameError(f"blob name {raw!r} contains control characters")
    if raw != raw.strip():
        raise BlobNameError(f"blob name {raw!r} starts or ends with white space")
    blob = raw.removeprefix(f"{container}/")
    if not blob:
        raise BlobNameError(f"blob name {raw!r} is empty")
    segments = blob.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise BlobNameError(
            f"blob name {raw!r} is not canonical: it has an empty, '.' or '..' segment"
        )
    if len(blob) > MAX_BLOB_NAME:
        raise BlobNameError(f"blob name {raw!r} is longer than {MAX_BLOB_NAME} characters")
    return blob


def stylized_names(input_blob: str, style: str) -> tuple[str, str]:
    """The output and error-report names of ``input_blob`` in ``style`` (module docstring).

    Raises:
        BlobNameError: the names would exceed :data:`MAX_BLOB_NAME`.
    """
    error = f"{input_blob}.{style}.error.json"
    if len(error) > MAX_BLOB_NAME:
        room = MAX_BLOB_NAME - len(error) + len(input_blob)
        raise BlobNameError(
            f"blob name {input_blob[:40]!r}... is {len(input_blob)} characters; with style "
            f"{style!r} at most {room} leave room for the output's name"
        )
    return f"{input_blob}.{style}.mp4", error


def rejected_report_name(raw: str) -> str:
    """Where the report of a refused name ``raw`` goes: a name no accepted input produces."""
    return f"{REJECTED_FOLDER}/{name_hash(raw)}.error.json"


def name_hash(name: str) -> str:
    """16 hex digits of SHA-256: short, and as good as unique for names."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def local_file_name(blob: str) -> str:
    """A bounded local file name for ``blob``: its hash and its (short, plain) extension."""
    suffix = PurePosixPath(blob).suffix.lower()
    return name_hash(blob) + (suffix if _SAFE_SUFFIX.match(suffix) else "")


def short_label(name: str, limit: int = 80) -> str:
    """``name``'s last segment, cut to ``limit`` characters: a readable flow run name."""
    last = PurePosixPath(name).name or name
    last = _CONTROL_CHARACTERS.sub("?", last)
    return last if len(last) <= limit else f"{last[:limit - 3]}..."
