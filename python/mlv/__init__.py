"""Read and commit mlv model checkpoints from Python, without the command line.

mlv is version control for safetensors checkpoints: every tensor is a content-addressed
object, fine-tunes are stored as compressed deltas against their base. This package wraps
the same library the ``mlv`` command uses (bundled in the wheel: nothing else to install)::

    import mlv

    repo = mlv.Repository(".")                       # the repository at or above "."
    weights = repo.load("HEAD~1", "model.safetensors")   # dict[str, numpy.ndarray]
    w = repo.tensor("v2", "model.safetensors", "lm_head.weight")  # decodes only that tensor
    repo.add("model.safetensors")
    repo.commit("step 1000")

Arrays have numpy's dtypes: F64, F32, F16 -> float64/32/16, I8..I64 and U8..U64 -> the
integer types, BOOL -> bool, C64 -> complex64. numpy has no bfloat16: BF16 tensors come
back as ``ml_dtypes.bfloat16`` arrays when ``ml_dtypes`` is installed, else as their raw
bits in ``uint16`` arrays (``BFLOAT16`` says which). F8 types come back as their raw bits in
``uint8`` arrays of the tensor's shape; F4 and F6 types, packed below a byte per element,
as a flat ``uint8`` array of their packed bytes.

Errors raise :class:`MlvError` (or a subclass) whose text is what the CLI prints, hint
included; ``e.message`` and ``e.hint`` hold the two parts.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _mlv
from ._mlv import (
    CorruptError,
    LockedError,
    MlvError,
    NotARepositoryError,
    NotFoundError,
    NothingToCommitError,
    UnknownRevisionError,
)

__all__ = [
    "Repository",
    "init",
    "MlvError",
    "NotARepositoryError",
    "UnknownRevisionError",
    "NotFoundError",
    "NothingToCommitError",
    "LockedError",
    "CorruptError",
    "BFLOAT16",
    "numpy_dtype",
]

PathLike = Union[str, "os.PathLike[str]"]

# The numpy dtype of BF16 arrays: ``ml_dtypes.bfloat16`` if installed, else ``uint16``.
BFLOAT16: np.dtype
try:
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:
    BFLOAT16 = np.dtype("<u2")

_NUMPY = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "C64": np.dtype("<c8"),
}

# Types packed below one byte per element: their bytes do not fill the tensor's shape.
_PACKED = {"F4", "F6_E2M3", "F6_E3M2"}


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype arrays of a safetensors dtype (``"BF16"``, ``"F32"``...) come back as."""
    if dtype == "BF16":
        return BFLOAT16
    return _NUMPY.get(dtype, np.dtype("u1"))


def _array(dtype: str, shape: Sequence[int], data: bytearray) -> np.ndarray:
    a = np.frombuffer(data, dtype=numpy_dtype(dtype))
    return a if dtype in _PACKED else a.reshape(tuple(shape))


def _notes() -> None:
    for note in _mlv.drain_notes():
        warnings.warn(note, stacklevel=3)


def _paths(paths: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


class Repository:
    """An mlv repository: the one at or above ``path`` (a work tree or a bare repository).

    Revisions are what the CLI accepts: ``HEAD``, ``HEAD~2``, a branch, a tag, a commit id or
    a unique prefix of one. Paths are relative to the repository root (``/``-separated) or
    absolute inside it. Every read is verified against the objects' ids. Calls release the
    GIL while they work; one ``Repository`` may be shared between threads.
    """

    def __init__(self, path: PathLike = ".") -> None:
        self._repo = _mlv.Repository(os.fspath(path))

    @classmethod
    def _wrap(cls, raw: "_mlv.Repository") -> "Repository":
        repo = cls.__new__(cls)
        repo._repo = raw
        return repo

    def __repr__(self) -> str:
        return f"mlv.Repository({str(self.root)!r})"

    @property
    def root(self) -> str:
        """The work-tree root (for a bare repository, its directory)."""
        return os.fspath(self._repo.root)

    @property
    def bare(self) -> bool:
        """True for a repository without a work tree."""
        return self._repo.bare

    def resolve(self, rev: str) -> str:
        """The full commit id (hex) that ``rev`` names."""
        return self._repo.resolve(rev)

    def head(self) -> Optional[str]:
        """The commit id HEAD points at, or None before the first commit."""
        return self._repo.head()

    def files(self, rev: str = "HEAD") -> Dict[str, Dict[str, Any]]:
        """The files of a revision: path -> ``{"kind": "safetensors" | "blob" | "chunked", "size": bytes}``
        ("chunked": a large file stored as content-defined chunks)."""
        return {p: {"kind": k, "size": s} for p, k, s in self._repo.files(rev)}

    def tensor_info(self, rev: str, path: PathLike) -> Dict[str, Dict[str, Any]]:
        """The tensors of a safetensors file, in file order, without decoding any:
        name -> ``{"dtype": "BF16", "shape": [...]}``."""
        return {n: {"dtype": d, "shape": list(s)} for n, d, s in self._repo.tensor_info(rev, os.fspath(path))}

    def load(self, rev: str, path: PathLike) -> Dict[str, np.ndarray]:
        """Every tensor of a safetensors file at a revision, as
        ``safetensors.numpy.load_file`` returns them (in file order), without a checkout."""
        return {n: _array(d, s, b) for n, d, s, b in self._repo.load(rev, os.fspath(path))}

    def tensor(self, rev: str, path: PathLike, name: str) -> np.ndarray:
        """One tensor of a safetensors file at a revision, decoding only that tensor."""
        _, d, s, b = self._repo.tensor(rev, os.fspath(path), name)
        return _array(d, s, b)

    def read_bytes(self, rev: str, path: PathLike) -> bytes:
        """A file's content at a revision (a safetensors file rebuilt byte for byte)."""
        return bytes(self._repo.read_bytes(rev, os.fspath(path)))

    def log(self, rev: str = "HEAD", max_count: Optional[int] = None, stat: bool = False) -> List[Dict[str, Any]]:
        """Commits reachable from ``rev``, newest first, as ``mlv log --json`` prints them:
        ``id``, ``parents``, ``author`` and ``committer`` (name, email, time, tz_minutes),
        ``git`` (the source commit), ``message``, ``logical_bytes``, plus ``date`` as the CLI
        shows it; with ``stat``, ``stored_bytes_added``."""
        return json.loads(self._repo.log(rev, max_count, stat))

    def diff(self, a: str = "HEAD", b: Optional[str] = None) -> List[Dict[str, Any]]:
        """What changed from revision ``a`` to ``b`` (None: the work tree), as
        ``mlv diff --json`` prints it: per file ``path``, ``change`` and, for safetensors
        files, ``tensors`` with ``added``, ``removed``, ``unchanged`` and per changed tensor
        ``elements``, ``changed``, ``max_abs_diff``, ``mean_abs_diff``, ``low_mantissa_only``;
        for text files ``text``, a unified diff."""
        return json.loads(self._repo.diff(a, b))

    def add(self, paths: Union[PathLike, Sequence[PathLike]], base: Optional[str] = None) -> Dict[str, Any]:
        """Stages files or directories (relative to the root, or absolute), as ``mlv add``;
        ``base`` names a revision whose same paths serve as delta bases. Returns the report
        of ``mlv add --json``."""
        report = json.loads(self._repo.add(_paths(paths), base))
        _notes()
        return report

    def commit(self, message: str, all: bool = False, base: Optional[str] = None) -> str:
        """Commits what is staged (with ``all``, every tracked file's changes first), as
        ``mlv commit``; returns the new commit id. The author is ``MLV_AUTHOR_NAME`` and
        ``MLV_AUTHOR_EMAIL``, else ``[user]`` in ``.mlv/config``, else git's identity."""
        commit = self._repo.commit(message, all, base)
        _notes()
        return commit


def init(path: PathLike = ".", bare: bool = False) -> Repository:
    """Creates an empty repository in ``path`` (created if missing), as ``mlv init``; with
    ``bare``, one without a work tree (to push to)."""
    return Repository._wrap(_mlv.init(os.fspath(path), bare))
