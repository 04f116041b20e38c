"""Per-item screening of image files: which items are skipped, why, and the record of it.

:func:`autotransfer.data.load_data` keeps a dataset usable when some items are bad. Each file is
read once, checked from its header and its end marker (no decoding, except a reduced-size JPEG
decode when the end marker is missing: some cameras write data after it) and hashed (BLAKE2b);
exact duplicates, label conflicts and split leakage follow from the hashes. Every item left out
becomes a :class:`Skip`; ``strict=True`` turns any skip into one :class:`UserInputError`.
Pure Python and Pillow: no TensorFlow, so the CLI's input checks stay fast.
"""
from __future__ import annotations

import hashlib
import io
import os
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from autotransfer.data.dataset import SPLIT_NAMES
from autotransfer.errors import UserInputError

#: Why an item was skipped, in the order counts are shown.
SKIP_KINDS: tuple[str, ...] = (
    "truncated", "unreadable", "duplicate", "conflict", "leakage", "outside_root", "link_loop", "too_large",
    "empty_text",
)
#: The formats the pipeline decodes (``tf.io.decode_image``), as Pillow names them.
PILLOW_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "DIB", "WEBP"})
_LISTED = 3  # items named in a --strict error


@dataclass(frozen=True)
class Skip:
    """One item left out of the dataset: ``item`` (a path), ``reason`` (one line), ``kind`` (SKIP_KINDS)."""

    item: str
    reason: str
    kind: str

    def to_dict(self) -> dict[str, str]:
        return {"item": self.item, "reason": self.reason, "kind": self.kind}


def skip_counts(skips: Sequence[Skip]) -> dict[str, int]:
    """``{kind: n}`` for the kinds present, in :data:`SKIP_KINDS` order."""
    n = Counter(s.kind for s in skips)
    return {k: n[k] for k in SKIP_KINDS if n[k]}


def counts_text(skips: Sequence[Skip]) -> str:
    """``"2 truncated, 1 duplicate"``."""
    return ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in skip_counts(skips).items())


def skip_summary(skips: Sequence[Skip]) -> str | None:
    """The run's one console line about skipped items (None when nothing was skipped)."""
    if not skips:
        return None
    return (f"data: skipped {len(skips)} item{'s' if len(skips) > 1 else ''} ({counts_text(skips)}); "
            "listed in data.json; --strict makes this an error")


def strict_error(skips: Sequence[Skip], where: str) -> UserInputError:
    """The one-line error ``strict=True`` raises instead of skipping."""
    listed = "; ".join(f"'{s.item}' ({s.reason})" for s in skips[:_LISTED])
    more = f"; and {len(skips) - _LISTED} more" if len(skips) > _LISTED else ""
    return UserInputError(f"{where}: {len(skips)} item(s) cannot be used ({counts_text(skips)}): {listed}{more}. "
                          "Fix or remove them, or drop --strict (strict=False) to skip them.")


# ----------------------------------------------------------------------------------------- files


@contextmanager
def pillow_size_check_off() -> Iterator[None]:
    """Pillow's own pixel limit off while headers are read: ``Image.open`` only parses the header,
    the caller compares the size with its own limit, and no DecompressionBomb warning or error
    escapes. Process-wide (Pillow keeps the limit in a module global), restored on exit."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def check_files(paths: Sequence[str], max_pixels: int) -> list[tuple[str | None, Skip | None]]:
    """``(content digest, None)`` for a usable file, ``(None, Skip)`` otherwise; one per path, in order.

    Threads overlap the reads (hashing and zlib release the GIL); peak memory is one file per thread.
    """
    workers = max(1, min(8, os.cpu_count() or 1, len(paths)))
    with pillow_size_check_off(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: check_file(p, max_pixels), paths))


def check_file(path: str, max_pixels: int) -> tuple[str | None, Skip | None]:
    """Read, check and hash one file (see :func:`check_files`); call it inside :func:`pillow_size_check_off`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, Skip(path, f"cannot be read ({e.strerror or type(e).__name__})", "unreadable")
    if not data:
        return None, Skip(path, "empty file (0 bytes)", "unreadable")
    problem = _image_problem(data, max_pixels)
    if problem is not None:
        return None, Skip(path, *problem)
    return hashlib.blake2b(data, digest_size=16).hexdigest(), None


def _image_problem(data: bytes, max_pixels: int) -> tuple[str, str] | None:
    """``(reason, kind)`` when the bytes are no usable image; the header alone decides the size."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
            if fmt not in PILLOW_FORMATS:
                return f"{fmt} images are not supported (use JPEG/PNG/GIF/BMP/WebP)", "unreadable"
            if w * h > max_pixels:
                return (f"{w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} (--max-pixels)",
                        "too_large")
            cut = _cut_short(fmt, data, w, h)
            if cut is not None:
                return cut, "truncated"
            im.verify()  # PNG: chunk CRCs; the other formats have nothing cheap to verify
    except Image.UnidentifiedImageError:
        return "not a recognised image file", "unreadable"
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
        if _webp_short(data):  # Pillow's WebP reader fails at open on a cut file
            return _WEBP_CUT, "truncated"
        text = (str(e).strip().splitlines() or ["unreadable"])[0]
        return f"{type(e).__name__}: {text}", "truncated" if "truncat" in text.lower() else "unreadable"
    return None


def _cut_short(fmt: str, data: bytes, w: int, h: int) -> str | None:
    """Why the file looks truncated, from its end marker or declared size (O(1) but for PNG's search)."""
    end = data[-65536:].rstrip(b"\0")  # the tail only: no copy of a big file
    if fmt in ("JPEG", "MPO") and not end.endswith(b"\xff\xd9") and not _jpeg_decodes(data):
        return "truncated JPEG (no end-of-image marker, and a reduced decode fails)"
    if fmt == "PNG" and data.rfind(b"IEND") < 0:
        return "truncated PNG (no IEND chunk)"
    if fmt == "GIF" and not end.endswith(b";"):
        return "truncated GIF (no trailer byte)"
    if fmt == "WEBP" and _webp_short(data):
        return _WEBP_CUT
    if fmt in ("BMP", "DIB") and len(data) < _bmp_size(data, w, h):
        return "truncated BMP (shorter than its pixel rows need)"
    return None


_WEBP_CUT = "truncated WebP (shorter than its RIFF header says)"


def _webp_short(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) < 8 + int.from_bytes(data[4:8], "little")


def _bmp_size(data: bytes, w: int, h: int) -> int:
    """Bytes an uncompressed BMP needs (pixel offset + padded rows); 0 when the header cannot say."""
    def field(i: int, n: int) -> int:
        return int.from_bytes(data[i:i + n], "little")

    if len(data) < 34 or field(14, 4) < 40 or field(30, 4) not in (0, 3):  # core header, or RLE/JPEG/PNG inside
        return 0
    return field(10, 4) + h * ((field(28, 2) * w + 31) // 32) * 4


def _jpeg_decodes(data: bytes) -> bool:
    """Whether the JPEG decodes at 1/8 scale (Pillow's draft mode: the whole stream, few pixels)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except Exception:  # noqa: BLE001 - any failure means the pipeline would fail too
        return False
    return True


# -------------------------------------------------------------------------------- across items


def path_conflicts(items: Sequence[str], labels: Sequence[Any]) -> dict[int, Skip]:
    """``{index: Skip}`` for every row of a file listed under two or more labels."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(items):
        rows[p].append(i)
    out: dict[int, Skip] = {}
    for idx in rows.values():
        names = sorted({str(labels[i]) for i in idx})
        if len(names) > 1:
            why = f"listed under {len(names)} labels ({', '.join(map(repr, names))}): every row of it dropped"
            out.update({i: Skip(items[i], why, "conflict") for i in idx})
    return out


def content_skips(
    items: Sequence[str], labels: Sequence[Any], split: Sequence[str] | None, digests: Sequence[str | None]
) -> dict[int, Skip]:
    """``{index: Skip}`` from equal content: under two labels every copy goes (conflict); otherwise
    the first copy of the earliest split stays, later copies in that split are duplicates and
    copies in later splits are leakage."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(digests):
        if d is not None:
            groups[d].append(i)
    out: dict[int, Skip] = {}
    for idx in (g for g in groups.values() if len(g) > 1):
        names = sorted({str(labels[i]) for i in idx})
        if len(names) > 1:
            why = f"same content under {len(names)} labels ({', '.join(map(repr, names))}): every copy dropped"
            out.update({i: Skip(items[i], why, "conflict") for i in idx})
            continue
        order = sorted(idx, key=lambda i: (0 if split is None else SPLIT_NAMES.index(split[i]), i))
        keep = order[0]
        for i in order[1:]:
            if split is not None and split[i] != split[keep]:
                out[i] = Skip(items[i], f"{split[i]} copy of the {split[keep]} item '{items[keep]}' (same "
                                        "content): it would leak between splits", "leakage")
            else:
                out[i] = Skip(items[i], f"same content as '{items[keep]}' (kept)", "duplicate")
    return out
