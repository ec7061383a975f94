"""smallNORB (LeCun, Huang & Bottou, CVPR 2004) read from the six official files, preprocessed once and cached.

The data set is in no package registry: users download it themselves
(https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/) and import it with
``metavae data norb --source DIR``, which checks the files, copies them to
``<root>/smallNORB/raw/`` and writes the preprocessed cache. Files (``.mat`` or ``.mat.gz``):

    smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat,info}.mat   instances 4, 6, 7, 8, 9
    smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,cat,info}.mat    instances 0, 1, 2, 3, 5

**Binary-matrix format** (little-endian): int32 magic (``0x1E3D4C55`` uint8 matrix,
``0x1E3D4C54`` int32 matrix), int32 ``ndim``, ``max(3, ndim)`` int32 dims (the unused ones are 1
and ignored here), then the data in C order. ``dat`` = ``[24300, 2, 96, 96]`` uint8 (a stereo pair
per row), ``cat`` = ``[24300]`` int32 category 0–4 (animal, human, airplane, truck, car), ``info``
= ``[24300, 4]`` int32 (instance 0–9, elevation 0–8, azimuth 0, 2, …, 34, lighting 0–5). Hence the
official sizes: ``dat`` 8 + 4·4 = 24 header bytes + 24300·2·96·96 = 447,897,624 bytes; ``cat`` 8 +
3·4 = 20 + 24300·4 = 97,220; ``info`` 20 + 24300·4·4 = 388,820. The magic numbers, ``ndim``, the
dims, the byte count and the factor ranges are checked; any failure is a one-line
:class:`~metavae.errors.DataError` naming the file and the fix. Files with fewer rows than 24300
are read (synthetic test files) with a warning that they are not the official data. No SHA-256
of the official files is published with the data set, so none is checked; the digests of the
imported files are recorded in the cache manifest.

**Preprocessing** (PAPER.md §2: "resized and centre-cropped to 32×32", torchvision's
``Resize(32)`` + ``CenterCrop(32)``): each 96×96 image is resized to 32×32 by area averaging —
96 = 3·32, so every output pixel is the mean of a 3×3 block — then centre-cropped to 32×32,
which on these square images removes nothing. (We read the paper this way; the other reading,
resize to 36 and crop 32, would zoom in by 9/8.) Grey levels are rounded to uint8, as a resized
8-bit image is, and scaled to [0, 1] when fetched. Both stereo images of a pair are separate
examples (rows ``2i`` and ``2i + 1`` for pair ``i``, camera 0 and 1) with the pair's category as
label and its factors: ``instance``, ``elevation`` (0–8), ``azimuth`` (index 0–17 = the file's
value / 2), ``lighting`` (0–5), ``camera`` (0, 1). The official instance split makes the train and
test parts: 48,600 examples each.

**Cache**: ``<root>/smallNORB/processed/smallnorb-32x32.npz`` (uint8 images, labels, factors;
≈100 MB, uncompressed, loads in about a second) and ``smallnorb-32x32.json`` (format version,
preprocessing, the SHA-256 of the ``.npz``, and the raw files it was built from: name, size,
mtime, SHA-256). Both are written atomically. A load checks the ``.npz`` against its digest; a
damaged cache, or one built from raw files that have since changed (size or mtime), is rebuilt
from the raw files when they are there, and reported (one line) when they are not. The raw
files may be deleted once the cache exists.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from metavae.data.families import FactorSplit
from metavae.data.mnist import default_data_root
from metavae.errors import DataError
from metavae.files import atomic_write, atomic_write_json, describe_os_error

log = logging.getLogger(__name__)

__all__ = [
    "CATEGORIES", "FACTORS", "FILE_PREFIXES", "EXPECTED_FILES", "NUM_PAIRS", "TRAIN_INSTANCES", "TEST_INSTANCES",
    "IMAGE_SIZE", "parse_binary_matrix", "read_smallnorb_part", "preprocess", "load_smallnorb", "import_smallnorb",
    "raw_dir", "cache_paths",
]

DATASET_DIR = "smallNORB"
URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
#: the file-name prefix of each part
FILE_PREFIXES = {"train": "smallnorb-5x46789x9x18x6x2x96x96-training", "test": "smallnorb-5x01235x9x18x6x2x96x96-testing"}
KINDS = ("dat", "cat", "info")
NUM_PAIRS = 24_300
RAW_SIZE = 96
#: the preprocessed side length (resize to RESIZE, centre crop to IMAGE_SIZE)
RESIZE = 32
IMAGE_SIZE = 32
CATEGORIES = ("animal", "human", "airplane", "truck", "car")
#: the factor of every example, in the order of the cache's factor columns
FACTORS = ("instance", "elevation", "azimuth", "lighting", "camera")
TRAIN_INSTANCES = (4, 6, 7, 8, 9)
TEST_INSTANCES = (0, 1, 2, 3, 5)
_INSTANCES = {"train": TRAIN_INSTANCES, "test": TEST_INSTANCES}

UINT8_MAGIC = 0x1E3D4C55
INT32_MAGIC = 0x1E3D4C54
CACHE_VERSION = 1
PREPROCESSING = (f"{RAW_SIZE}x{RAW_SIZE} -> area resize to {RESIZE}x{RESIZE} -> centre crop {IMAGE_SIZE}x{IMAGE_SIZE} "
                 "-> round to uint8; stereo images as rows 2i, 2i+1")


@dataclass(frozen=True)
class _Layout:
    """One kind of file: its magic number, element type and the dims after the first (number of pairs)."""

    magic: int
    dtype: str
    trailing: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return 1 + len(self.trailing)

    @property
    def header_bytes(self) -> int:
        return 8 + 4 * max(3, self.ndim)

    def size(self, pairs: int = NUM_PAIRS) -> int:
        return self.header_bytes + pairs * int(np.prod(self.trailing, dtype=np.int64)) * np.dtype(self.dtype).itemsize


LAYOUTS = {"dat": _Layout(UINT8_MAGIC, "u1", (2, RAW_SIZE, RAW_SIZE)), "cat": _Layout(INT32_MAGIC, "<i4", ()),
           "info": _Layout(INT32_MAGIC, "<i4", (4,))}


def file_name(part: str, kind: str) -> str:
    """``smallnorb-…-training-dat.mat`` etc. (the uncompressed name; ``.gz`` is also accepted)."""
    return f"{FILE_PREFIXES[part]}-{kind}.mat"


#: the six official file names and their uncompressed sizes in bytes
EXPECTED_FILES: dict[str, int] = {file_name(p, k): LAYOUTS[k].size() for p in FILE_PREFIXES for k in KINDS}


def raw_dir(root: str | os.PathLike[str]) -> Path:
    return Path(root) / DATASET_DIR / "raw"


def cache_paths(root: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(<root>/smallNORB/processed/smallnorb-32x32.npz, ….json)``: the cached arrays and their manifest."""
    folder = Path(root) / DATASET_DIR / "processed"
    stem = f"smallnorb-{IMAGE_SIZE}x{IMAGE_SIZE}"
    return folder / f"{stem}.npz", folder / f"{stem}.json"


def _fix(root: str | os.PathLike[str] | None = None) -> str:
    where = f" --root {root}" if root is not None else ""
    return f"download the official files from {URL} and run `metavae data norb --source DIR{where}`"


def _missing_message(folder: Path, missing: list[str], root: str | os.PathLike[str] | None) -> str:
    listed = ", ".join(f"{name} ({EXPECTED_FILES[name]:,} bytes)" for name in missing)
    return (f"smallNORB files missing from {folder}: {listed} (each .mat or .mat.gz; sizes uncompressed); "
            f"{_fix(root)}")


# --------------------------------------------------------------------------- reading the binary matrices
def parse_binary_matrix(data: bytes, kind: str, name: str = "<bytes>") -> np.ndarray:
    """Parse a smallNORB binary matrix of ``kind`` ``"dat"``, ``"cat"`` or ``"info"``.

    Returns a read-only view of ``data``: ``(n, 2, 96, 96)`` uint8, ``(n,)`` or ``(n, 4)`` int32.

    Raises:
        DataError: wrong magic number, wrong ``ndim`` or dims, or a byte count that disagrees with
            the header (truncated or corrupted); the message starts with ``name``.
    """
    layout = LAYOUTS[kind]
    if len(data) < 8:
        raise DataError(f"{name}: {len(data)} bytes, too short for a smallNORB header (truncated)")
    magic, ndim = (int(v) for v in np.frombuffer(data, dtype="<i4", count=2))
    if magic != layout.magic:
        what = {UINT8_MAGIC: "a uint8 matrix", INT32_MAGIC: "an int32 matrix"}
        raise DataError(f"{name}: magic number {magic & 0xFFFFFFFF:#010x} is not {layout.magic:#010x} "
                        f"({what[layout.magic]}, as every smallNORB -{kind}.mat file): not a smallNORB {kind} file")
    if ndim != layout.ndim:
        raise DataError(f"{name}: the header announces {ndim} dimensions, a smallNORB {kind} file has {layout.ndim}")
    if len(data) < layout.header_bytes:
        raise DataError(f"{name}: {len(data)} bytes, shorter than its {layout.header_bytes}-byte header (truncated)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype="<i4", count=ndim, offset=8))
    if dims[0] < 1 or dims[1:] != layout.trailing:
        expected = ", ".join(["N", *map(str, layout.trailing)])
        raise DataError(f"{name}: dims {list(dims)}, expected [{expected}] for a smallNORB {kind} file (N = {NUM_PAIRS:,})")
    expected_bytes = layout.size(dims[0]) - layout.header_bytes
    if len(data) - layout.header_bytes != expected_bytes:
        raise DataError(f"{name}: the header announces {list(dims)} = {expected_bytes:,} bytes of data but the file "
                        f"holds {len(data) - layout.header_bytes:,} (truncated or corrupted)")
    return np.frombuffer(data, dtype=layout.dtype, offset=layout.header_bytes).reshape(dims)


def _locate(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz`` (the plain file first), or ``None``."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _read(path: Path, fix: str) -> tuple[bytes, str]:
    """The (decompressed) content of ``path`` and the SHA-256 of the file as stored."""
    try:
        stored = path.read_bytes()
        data = gzip.decompress(stored) if path.suffix == ".gz" else stored
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        what = describe_os_error(exc) if isinstance(exc, OSError) else " ".join(str(exc).split())
        raise DataError(f"{path}: cannot be read ({what}): {fix}") from None
    return data, hashlib.sha256(stored).hexdigest()


def _check_range(values: np.ndarray, allowed: np.ndarray, what: str, path: Path, fix: str) -> None:
    bad = ~np.isin(values, allowed)
    if bad.any():
        raise DataError(f"{path}: {what} out of range in {int(bad.sum())} rows (allowed: {sorted(allowed.tolist())}; "
                        f"first bad value {int(values[bad][0])}); not an official smallNORB file: {fix}")


def read_smallnorb_part(folder: str | os.PathLike[str], part: str, root: str | os.PathLike[str] | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, dict[str, Any]]]:
    """Read and check the ``dat``, ``cat`` and ``info`` files of ``part`` (``"train"``/``"test"``) in ``folder``.

    Returns ``(dat (n, 2, 96, 96) uint8, cat (n,) int32, info (n, 4) int32, sources)``; ``sources``
    maps each file read to its ``{"size", "sha256"}`` (of the file as stored).

    Raises:
        DataError: a file is missing, unreadable, malformed, the three disagree on the number of
            pairs, or a category / factor is out of range (for the instance: not of ``part``'s
            instances, e.g. the training and testing files swapped).
    """
    folder = Path(folder)
    fix = _fix(root)
    paths = {kind: _locate(folder, file_name(part, kind)) for kind in KINDS}
    missing = [file_name(part, kind) for kind, path in paths.items() if path is None]
    if missing:
        raise DataError(_missing_message(folder, missing, root))
    arrays, sources = {}, {}
    for kind, path in paths.items():
        assert path is not None
        data, digest = _read(path, fix)
        try:
            arrays[kind] = parse_binary_matrix(data, kind, str(path))
        except DataError as exc:
            raise DataError(f"{exc}; {fix}") from None
        sources[path.name] = {"size": path.stat().st_size, "sha256": digest}
    dat, cat, info = arrays["dat"], arrays["cat"], arrays["info"]
    if not dat.shape[0] == cat.shape[0] == info.shape[0]:
        raise DataError(f"{folder}: the {part} files disagree on the number of pairs (dat {dat.shape[0]}, cat "
                        f"{cat.shape[0]}, info {info.shape[0]}); {fix}")
    _check_range(cat, np.arange(len(CATEGORIES)), "category", paths["cat"], fix)  # type: ignore[arg-type]
    for column, (what, allowed) in enumerate((("instance", np.array(_INSTANCES[part])), ("elevation", np.arange(9)),
                                              ("azimuth", np.arange(0, 36, 2)), ("lighting", np.arange(6)))):
        _check_range(info[:, column], allowed, f"{what} (for the {part} part)" if what == "instance" else what,
                     paths["info"], fix)  # type: ignore[arg-type]
    if dat.shape[0] != NUM_PAIRS:
        log.warning("%s: %d pairs, not the official %d (not the official smallNORB files)", paths["dat"], dat.shape[0], NUM_PAIRS)
    return dat, cat, info, sources


# --------------------------------------------------------------------------- preprocessing
def preprocess_images(images: np.ndarray, chunk: int = 4096) -> torch.Tensor:
    """``(n, 96, 96)`` uint8 → ``(n, 32, 32)`` uint8: area resize to ``RESIZE``, centre crop to
    ``IMAGE_SIZE``, rounded. Batched in ``chunk`` images (bounded memory)."""
    n = images.shape[0]
    out = torch.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    top = (RESIZE - IMAGE_SIZE) // 2
    for start in range(0, n, chunk):
        x = torch.from_numpy(np.array(images[start : start + chunk], dtype=np.float32))[:, None]  # (c, 1, 96, 96)
        x = F.interpolate(x, size=(RESIZE, RESIZE), mode="area")  # (c, 1, RESIZE, RESIZE): 3×3 block means
        x = x[:, 0, top : top + IMAGE_SIZE, top : top + IMAGE_SIZE]  # (c, 32, 32)
        out[start : start + x.shape[0]] = x.round().clamp(0, 255).to(torch.uint8)
    return out


def preprocess(dat: np.ndarray, cat: np.ndarray, info: np.ndarray) -> dict[str, np.ndarray]:
    """Pairs → examples: ``{"images": (2n, 32, 32) uint8, "labels": (2n,) int64, "factors": (2n, 5) int64}``.

    Row ``2i + c`` is camera ``c`` of pair ``i``; factor columns :data:`FACTORS` (azimuth as index 0–17).
    """
    n = dat.shape[0]
    images = preprocess_images(dat.reshape(2 * n, RAW_SIZE, RAW_SIZE)).numpy()
    labels = np.repeat(cat.astype(np.int64), 2)
    factors = np.empty((2 * n, len(FACTORS)), dtype=np.int64)
    factors[:, :4] = np.repeat(info.astype(np.int64), 2, axis=0)
    factors[:, 2] //= 2  # azimuth 0, 2, …, 34 → index 0 … 17
    factors[:, 4] = np.tile([0, 1], n)
    return {"images": images, "labels": labels, "factors": factors}


def _as_split(arrays: dict[str, np.ndarray]) -> FactorSplit:
    factors = torch.from_numpy(np.ascontiguousarray(arrays["factors"]))
    return FactorSplit(torch.from_numpy(np.ascontiguousarray(arrays["images"])),
                       torch.from_numpy(np.ascontiguousarray(arrays["labels"])),
                       {name: factors[:, k].contiguous() for k, name in enumerate(FACTORS)})


# --------------------------------------------------------------------------- the cache
def _npz_bytes(parts: dict[str, dict[str, np.ndarray]]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{part}_{key}": value for part, arrays in parts.items() for key, value in arrays.items()})
    return buffer.getvalue()


def _write_cache(root: Path, parts: dict[str, dict[str, np.ndarray]], sources: dict[str, dict[str, Any]]) -> Path:
    npz, manifest = cache_paths(root)
    hint = "free some space or choose another data root (--data-dir), then run `metavae data norb` again"
    try:
        npz.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {npz.parent}: {describe_os_error(exc)}; {hint}") from None
    data = _npz_bytes(parts)
    atomic_write(npz, lambda fh: fh.write(data), error=DataError, hint=hint)
    atomic_write_json(manifest, {
        "format": CACHE_VERSION, "preprocessing": PREPROCESSING, "factors": list(FACTORS),
        "examples": {part: int(arrays["labels"].shape[0]) for part, arrays in parts.items()},
        "sha256": hashlib.sha256(data).hexdigest(), "sources": sources,
    }, error=DataError, hint=hint)
    log.info("smallNORB cache written: %s", npz)
    return npz


def _stat_sources(folder: Path, sources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``sources`` with each file's mtime added (what a later load compares to see that the raw files changed)."""
    return {name: {**info, "mtime_ns": (folder / name).stat().st_mtime_ns} for name, info in sources.items()}


def _stale_reason(root: Path, manifest: dict[str, Any]) -> str | None:
    """Why a cache with this manifest may not be used (``None``: it may), before its digest is checked."""
    if manifest.get("format") != CACHE_VERSION or manifest.get("preprocessing") != PREPROCESSING:
        return "it was written by another version of metavae"
    raw = raw_dir(root)
    for name, info in (manifest.get("sources") or {}).items():
        path = raw / name
        if path.exists():
            stat = path.stat()
            if (stat.st_size, stat.st_mtime_ns) != (info.get("size"), info.get("mtime_ns")):
                return f"{path} changed since the cache was built"
    return None


def _read_cache(root: Path) -> tuple[dict[str, dict[str, np.ndarray]] | None, str]:
    """The cached arrays, or ``(None, why not)``."""
    npz, manifest_path = cache_paths(root)
    if not npz.exists() and not manifest_path.exists():
        return None, "no cache"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a mapping")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"its manifest {manifest_path} cannot be read ({describe_os_error(exc)})"
    reason = _stale_reason(root, manifest)
    if reason is not None:
        return None, reason
    try:
        data = npz.read_bytes()
    except OSError as exc:
        return None, f"{npz} cannot be read ({describe_os_error(exc)})"
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        return None, f"{npz} does not match the checksum in its manifest (damaged)"
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            parts = {part: {key: arrays[f"{part}_{key}"] for key in ("images", "labels", "factors")} for part in FILE_PREFIXES}
    except (OSError, ValueError, KeyError, zlib.error) as exc:
        return None, f"{npz} cannot be parsed ({' '.join(str(exc).split())[:120]})"
    return parts, ""


def _build(root: Path, folder: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
    """Read and preprocess both parts from ``folder``; returns the arrays and the files' records."""
    missing = [name for name in EXPECTED_FILES if _locate(folder, name) is None]
    if missing:  # all six named at once
        raise DataError(_missing_message(folder, missing, root))
    parts, sources = {}, {}
    for part in FILE_PREFIXES:
        dat, cat, info, found = read_smallnorb_part(folder, part, root)
        parts[part] = preprocess(dat, cat, info)
        sources.update(found)
        del dat, cat, info  # free the raw bytes before the next part
    return parts, sources


def load_smallnorb(root: str | os.PathLike[str] | None = None) -> tuple[FactorSplit, FactorSplit]:
    """The preprocessed smallNORB train and test parts, as :class:`~metavae.data.families.FactorSplit`.

    Read from the cache under ``root`` (default ``$METAVAE_DATA`` or ``./data``); built from
    ``<root>/smallNORB/raw`` (and cached) when there is no valid cache.

    Raises:
        DataError: no valid cache and the raw files are missing or bad (one line naming the
            expected files and sizes, or the bad file, and the fix).
    """
    root = default_data_root() if root is None else Path(root)
    parts, reason = _read_cache(root)
    if parts is None:
        raw = raw_dir(root)
        have_raw = all(_locate(raw, name) is not None for name in EXPECTED_FILES)
        if reason != "no cache":
            if not have_raw:
                raise DataError(f"the smallNORB cache cannot be used ({reason}) and the raw files are not in {raw} to "
                                f"rebuild it: {_fix(root)}")
            log.warning("rebuilding the smallNORB cache: %s", reason)
        log.info("preprocessing smallNORB from %s", raw)
        parts, sources = _build(root, raw)
        _write_cache(root, parts, _stat_sources(raw, sources))
    return _as_split(parts["train"]), _as_split(parts["test"])


def import_smallnorb(root: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Path:
    """``metavae data norb``: check the six files in ``source``, copy them into ``<root>/smallNORB/raw``
    and (re)build the cache; without ``source``, rebuild the cache from the raw files already there.

    Every file is read and checked before anything is copied, so a bad download leaves the data
    root as it was. Returns the cache path.

    Raises:
        DataError: a file is missing (one line: the expected names and sizes), malformed, or
            cannot be copied.
    """
    root = Path(root)
    raw = raw_dir(root)
    folder = raw if source is None else Path(source)
    if source is not None and not folder.is_dir():
        raise DataError(f"{folder} is not a folder: give --source the folder holding the six smallNORB files "
                        f"({', '.join(EXPECTED_FILES)}; .mat or .mat.gz)")
    parts, sources = _build(root, folder)
    if folder.resolve() != raw.resolve():
        hint = "free some space or choose another data root (--root), then run `metavae data norb --source DIR` again"
        try:
            raw.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create {raw}: {describe_os_error(exc)}; {hint}") from None
        for name in EXPECTED_FILES:
            src = _locate(folder, name)
            assert src is not None
            atomic_write(raw / src.name, lambda fh, s=src: _copy(s, fh), error=DataError, hint=hint)
            other = raw / (name if src.name.endswith(".gz") else f"{name}.gz")
            if other.exists():  # one copy of each file: the imported one
                other.unlink()
    _write_cache(root, parts, _stat_sources(raw, sources))
    return cache_paths(root)[0]


def _copy(src: Path, fh: Any) -> None:
    with src.open("rb") as source:
        shutil.copyfileobj(source, fh, length=1 << 22)
