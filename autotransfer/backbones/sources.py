"""Backbone sources: turn a handle into a local TF-Hub-format directory, chosen by the handle's scheme.

New sources plug in with :func:`register_source` (a resolver takes the handle, returns a local path).
"""
from __future__ import annotations

import hashlib
import importlib
import os
import re
from pathlib import Path
from typing import Any, Callable

from autotransfer.errors import BackboneError, MissingDependencyError

Resolver = Callable[[str], Path]
_SOURCES: dict[str, Resolver | str] = {}

METADATA_FILE = "autotransfer_module.json"


def load_saved_model(path: str | Path) -> Any:
    """``tf.saved_model.load`` after registering the ops of optional TensorFlow add-ons
    (tensorflow-text's tokenisers, which text modules and their exports run in the graph): a graph
    that uses them cannot load otherwise. A missing add-on is one clear error."""
    import tensorflow as tf

    try:
        import tensorflow_text  # noqa: F401 - importing it registers its ops
    except ImportError:
        pass
    try:
        return tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001 - TF's message is a page; the missing op is what matters
        missing = re.search(r"Op type not registered '(\w+)'", str(exc))
        if missing is None:
            raise
        raise MissingDependencyError(
            f"{path} uses the op {missing.group(1)} of a TensorFlow add-on that is not installed; text modules "
            "and their exports need tensorflow-text: pip install 'autotransfer[text]'.") from None


def register_source(scheme: str, resolver: Resolver | str) -> None:
    """Register ``resolver`` for handles that start with ``scheme + '://'``: a function, or its
    ``"module:function"`` path, imported at the first such handle (as an entry point is)."""
    _SOURCES[scheme] = resolver


def _check_dir(path: Path, handle: str) -> Path:
    if not (path / "saved_model.pb").is_file():
        raise BackboneError(
            f"Backbone {handle!r}: {path} is not a TF-Hub-format SavedModel (no saved_model.pb there). "
            "Point the handle at a module directory, or run `autotransfer zoo build` for zoo:// handles."
        )
    return path


def _local(handle: str) -> Path:
    path = Path(handle.removeprefix("file://")).expanduser()
    if not path.exists():
        raise BackboneError(f"Backbone {handle!r}: directory {path} does not exist. Fix the handle in the search space.")
    return _check_dir(path, handle)


def _hub(handle: str) -> Path:
    # Real network loading for tfhub.dev / Kaggle handles; TF-Hub caches under TFHUB_CACHE_DIR.
    try:
        import tensorflow_hub as hub

        return _check_dir(Path(hub.resolve(handle)), handle)
    except BackboneError:
        raise
    except Exception as exc:  # noqa: BLE001 - any download failure becomes one clear message
        raise BackboneError(
            f"Backbone {handle!r} could not be downloaded ({type(exc).__name__}: {str(exc)[:200]}). "
            "Without network access use the offline search space (search_spaces/offline.yaml)."
        ) from exc


def known_schemes() -> list[str]:
    """The handle schemes a source is registered for (``file`` also covers plain paths)."""
    return sorted(_SOURCES)


register_source("file", _local)
register_source("zoo", "autotransfer.zoo:resolve_handle")  # by path: the zoo pulls in its converter code
register_source("http", _hub)
register_source("https", _hub)


def resolve_handle(handle: str) -> Path:
    """Return the local directory of a handle's TF-Hub-format SavedModel."""
    scheme = handle.split("://", 1)[0] if "://" in handle else "file"
    resolver = _SOURCES.get(scheme)
    if resolver is None:
        raise BackboneError(f"Backbone {handle!r}: unknown scheme {scheme!r}. Known: {', '.join(sorted(_SOURCES))}.")
    if isinstance(resolver, str):
        module, name = resolver.split(":")
        resolver = _SOURCES[scheme] = getattr(importlib.import_module(module), name)
    return resolver(handle)


def module_fingerprint(path: str | os.PathLike) -> str:
    """A cheap content fingerprint of a SavedModel directory (graph bytes + variable index + data sizes)."""
    path = Path(path)
    h = hashlib.sha256()
    for name in ("saved_model.pb", "variables/variables.index"):
        f = path / name
        if f.exists():
            h.update(f.read_bytes())
    for f in sorted((path / "variables").glob("variables.data-*")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def backbone_fingerprint(handle: str, preprocess_handle: str | None = None) -> str:
    """The fingerprint of a backbone's modules: the handle's :func:`module_fingerprint`, combined
    with its preprocessor's for an encoder + preprocessor pair (so features cached for one
    preprocessor are never read back for another)."""
    encoder = module_fingerprint(resolve_handle(handle))
    if preprocess_handle is None:
        return encoder
    pre = module_fingerprint(resolve_handle(preprocess_handle))
    return hashlib.sha256(f"{encoder}|preprocess={pre}".encode()).hexdigest()[:16]
