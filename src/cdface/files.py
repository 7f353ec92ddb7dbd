"""Files read and written the one safe way: weights-only `torch.load`, atomic writes, sha256 fingerprints.

- `load_weights`: the only `torch.load` of the package. `weights_only=True`, so a pickle that asks to build
  Python objects beyond tensors and plain containers is refused (UnsafeFileError naming the file), never run;
  a TorchScript archive (code, not weights) is refused before torch sees it, with one line on converting it;
  a `.safetensors` file is read with the `safetensors` library (a name -> tensor dict, no pickle at all);
  anything else that is not a `torch.save` file is a FormatError naming the file.
- `atomic_write` / `atomic_writer`: write a temporary file in the target's folder, flush and fsync it, rename it
  over the target (`os.replace`, atomic on POSIX and Windows), then fsync the folder so the rename itself
  survives a power cut. A reader sees the old file or the new one, never half of one; a failed write leaves
  the old file and no temporary behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import pickle
import secrets
import struct
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from cdface.errors import FormatError, UnsafeFileError

__all__ = ["load_weights", "atomic_write", "atomic_writer", "sha256_file", "to_json_safe", "TEXT_ENCODING"]

# The codec of every text file a user writes (image lists, landmark files, pairs.txt, IJB/MegaFace/RFW lists):
# UTF-8, with the byte-order mark that Windows editors put at the start dropped instead of read as part of the
# first path or number ("utf-8-sig" reads plain UTF-8 unchanged).
TEXT_ENCODING = "utf-8-sig"


def load_weights(path: str | os.PathLike[str], expected: str = "a file written by torch.save",
                 mmap: bool = False) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)`, with clean errors.

    Raises UnsafeFileError (a pickle that wants to build arbitrary objects), FileNotFoundError (no such file,
    as `open` does), or FormatError(path, None, `expected` + the reason) for anything unreadable (a TorchScript
    archive: one line on converting it). A `.safetensors` file (by name or header) returns its name -> tensor
    dict. A training framework's objects beside the weights (a PyTorch Lightning `.ckpt`'s callback keys,
    AttributeDict, argparse Namespace: `_FRAMEWORK_GLOBALS`) come back as inert stand-ins; any other global is
    refused. `mmap`: map the tensors' storage instead of reading it (only the rows used are read from disk).
    """
    if _is_safetensors(path):
        return _load_safetensors(path, expected)
    if _is_torchscript(path):
        raise FormatError(
            path, None,
            f"{expected}, but it is a TorchScript archive (torch.jit.save: a program, which cdface does not run). "
            "If you trust its source, convert it once: python -c \"import torch; torch.save(torch.jit.load('IN')"
            ".state_dict(), 'OUT.pt')\" and load OUT.pt (pass --arch if its keys are not recognised)",
        )
    try:
        return _weights_only_load(path, mmap)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if not any(mark in reason for mark in _UNSAFE_MARKS):  # damaged data, not a request to build objects
            raise FormatError(path, None, f"{expected} (corrupt: {reason})") from exc
        inert = _load_with_inert_framework_objects(path, mmap)
        if inert is not None:
            return inert
        raise UnsafeFileError(
            f"{path}: refused to load: the file is a pickle that asks to build Python objects beyond tensors "
            f"and plain containers ({reason}). Only weights are loaded (torch.load weights_only=True); "
            "re-save it as a state_dict: torch.save(model.state_dict(), path)"
        ) from exc
    except FileNotFoundError:
        raise
    except Exception as exc:  # a malformed pickle/zip raises anything from EOFError to IndexError
        empty = os.path.isfile(path) and os.path.getsize(path) == 0
        reason = "the file is empty" if empty else (str(exc) or type(exc).__name__)
        raise FormatError(path, None, f"{expected} ({reason})") from exc


def _weights_only_load(path: str | os.PathLike[str], mmap: bool) -> Any:
    """The package's one `torch.load`: CPU tensors, weights only."""
    import torch

    # torch.load hands a `.safetensors` name to safetensors: a torch file under that name goes as an open file
    renamed = str(path).lower().endswith(".safetensors") and not mmap
    with open(path, "rb") if renamed else contextlib.nullcontext(path) as source:
        return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)


def _is_torchscript(path: str | os.PathLike[str]) -> bool:
    """A zip whose records hold TorchScript's `code/` or `constants.pkl` (a torch.save zip holds only `data.pkl`,
    `data/N` and version records): read from the zip's directory, nothing is unpickled."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _is_safetensors(path: str | os.PathLike[str]) -> bool:
    """The format's header (an 8-byte little-endian length, then a JSON object), or a `.safetensors` name on a
    file that is not a torch.save zip or pickle (a renamed `.pt` goes to torch.load, not to a damaged-file error)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        head = b""
    if str(path).lower().endswith(".safetensors"):
        return not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80")
    return len(head) == 9 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] < (1 << 30)


def _load_safetensors(path: str | os.PathLike[str], expected: str) -> dict[str, Any]:
    """The tensors of a safetensors file (CPU), or FormatError naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise FormatError(path, None, f"{expected}: a .safetensors file needs the safetensors package "
                          "(pip install safetensors)") from None
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as exc:  # safetensors raises its own SafetensorError for a damaged header or data
        raise FormatError(path, None, f"{expected} (a damaged safetensors file: {exc})") from exc


# Training frameworks whose objects a released checkpoint carries beside its weights (a PyTorch Lightning `.ckpt`
# such as AdaFace's keys its callback states by the callback class and may hold an AttributeDict or an argparse
# Namespace of hyper-parameters). Such objects are built as inert placeholders (`_Inert`), never as themselves.
_FRAMEWORK_GLOBALS = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "argparse.Namespace", "omegaconf.")


class _Inert:
    """A placeholder for a framework object in a checkpoint: takes any constructor arguments and state, runs
    nothing, keeps nothing of it (the weights beside it are what is read)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _load_with_inert_framework_objects(path: str | os.PathLike[str], mmap: bool) -> Any | None:
    """`torch.load(weights_only=True)` again with each global the file asks for stood in by an inert
    placeholder, when every such global is a training framework's (`_FRAMEWORK_GLOBALS`); None otherwise
    (the caller then refuses the file), and on a torch without `safe_globals` (before 2.5)."""
    from torch import serialization

    if not hasattr(serialization, "get_unsafe_globals_in_checkpoint") or not hasattr(serialization, "safe_globals"):
        return None
    try:
        names = serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint (a legacy pickle): refuse as before
        return None
    if not names or not all(name.startswith(_FRAMEWORK_GLOBALS) for name in names):
        return None
    # each class stands in as an inert object, except a dict subclass (Lightning's AttributeDict of
    # hyper-parameters), which stands in as a plain dict: the only mapping the weights-only unpickler fills
    as_dict: set[str] = set()
    for _ in range(len(names) + 1):
        stand_ins = [(dict if name in as_dict else type(f"_Inert_{i}", (_Inert,), {}), name)
                     for i, name in enumerate(names)]
        try:
            with serialization.safe_globals(stand_ins):
                return _weights_only_load(path, mmap)
        except Exception as exc:  # noqa: BLE001 - the unpickler's reason names the stand-in it could not fill
            wanted = {name for (cls, name) in stand_ins if cls is not dict and f"{cls.__qualname__}'" in str(exc)}
            if not wanted or "SETITEMS" not in str(exc):
                return None
            as_dict |= wanted
    return None


# The weights-only unpickler's reasons for a pickle that asks for a global (a class, a function), an object
# beyond tensors and containers, or an opcode it does not run (a plain pickle's FRAME, INST, ...); its other
# reasons (APPEND on a tuple, a string too long, a bad persistent id) mean damaged data.
_UNSAFE_MARKS = ("GLOBAL", "Can only create new object", "Can only build", "Unsupported operand")


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    """The weights-only unpickler's own reason inside torch's long message: after "WeightsUnpickler error:"
    when torch marks it, else the first line that is not torch's boilerplate (a blocked module's global comes
    as "Trying to load unsupported GLOBAL posix.system whose module posix is blocked.")."""
    text = str(exc)
    _, found, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (rest if found else text).splitlines() if line.strip()]
    if not found:
        lines = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)] or lines
    return lines[0] if lines else type(exc).__name__


# torch's own lines around the unpickler's reason
_TORCH_BOILERPLATE = ("Weights only load failed", "Check the documentation of torch.load", "Please file an issue")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], durable: bool = True) -> Iterator[IO[bytes]]:
    """`with atomic_writer(p) as fh: torch.save(obj, fh)`: `p` appears whole when the block ends without error.

    The temporary file (`<name>.<pid>.<random>.tmp` in the same folder, so the rename never crosses
    filesystems) is flushed and fsynced before `os.replace`, then the folder is fsynced; on any error it is
    removed and `p` is left as it was. The folder must exist; a `p` that is a folder is a FormatError.
    `durable=False` skips the two fsyncs (the rename stays atomic): for bulk writes of many small files that a
    re-run checks anyway.
    """
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the work, naming the temporary file
        raise FormatError(path, None, "a file to write, but it is a folder")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 keeps the umask's permissions (mkstemp would make every written file private)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, durable: bool = True) -> None:
    """Write `data` (str: UTF-8) to `path` atomically and, unless `durable=False`, durably (`atomic_writer`)."""
    with atomic_writer(path, durable) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # some filesystems (network mounts) refuse fsync on a folder: the rename is done anyway
        pass
    finally:
        os.close(dir_fd)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def to_json_safe(value: Any) -> Any:
    """Plain JSON types; NaN/inf become null (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return to_json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
