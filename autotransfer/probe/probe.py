"""The probe stage: score every candidate backbone on frozen (cached) features, best first.

Per candidate: features for every item in the splits (one pass, cached on disk), the main scorer
cross-validated on the TRAIN features (the selection criterion), extra scorers as extra columns,
and a linear probe fit on train and evaluated on val and test. The test column exists only for the
report's probe-vs-fine-tune comparison and never takes part in selection.

Options: ``scorer="combined"`` (the default) ranks by a cross-candidate combination of scorers (applied to the
leaderboard after every candidate is scored, :mod:`autotransfer.probe.combine`); ``halving=True``
runs successive halving on TRAIN subsamples first (:mod:`autotransfer.probe.halving`);
``multi_source=n`` adds a ``concat(...)`` candidate of the top n candidates' features.

Layout: :class:`_Featurizer` gets the candidates' features (cache, shared layer passes, halving's
growing subsamples); :mod:`autotransfer.probe.leaderboard` scores them into rows and ranks the
rows; :class:`_HalvingRungs` scores halving's rungs and :class:`_FullDataPass` the full-data
probe; :func:`probe` wires them together.
"""
from __future__ import annotations

import gc
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from autotransfer import modalities
from autotransfer.backbones import BackboneSpec, HubBackbone, backbone_fingerprint, resolve_handle
from autotransfer.data import LabelledData, Splits
from autotransfer.defaults import DEFAULT_SCORER
from autotransfer.errors import BackboneError, UserInputError
from autotransfer.probe.cache import FeatureCache, index_key
from autotransfer.probe.featurize import (
    extract_features,
    extract_source_logits,
    feature_batch,
    feature_dataset,
    forward_fn,
    images_dtype,
)
from autotransfer.probe.combine import CombinedScore
from autotransfer.params import DEFAULTS as D
from autotransfer.probe.halving import HalvingResult, SuccessiveHalving
# LEADERBOARD_COLUMNS stays importable from here: autotransfer.probe exports it from this module.
from autotransfer.probe.leaderboard import LEADERBOARD_COLUMNS, SPLITS, Leaderboard, ScorerSet  # noqa: F401
from autotransfer.probe.scorers import Scorer, ScoreResult

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int, str], None]
FEATURES_LAYER = "final"
LOGITS_LAYER = "source_logits"


@dataclass
class ProbeResult:
    """The probe leaderboard plus every candidate's cached features per split."""

    leaderboard: pd.DataFrame
    features: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    scorer: str = DEFAULT_SCORER
    #: Candidates the probe added (multi-source ``concat(a+b)``), by name, for the tune stage.
    specs: dict[str, BackboneSpec] = field(default_factory=dict)
    #: Successive halving: one dict per rung (budget, items, candidates, kept, seconds); else [].
    rungs: list[dict[str, Any]] = field(default_factory=list)

    def top(self, k: int) -> list[str]:
        """Names of the ``k`` best candidates that did not fail."""
        ok = self.leaderboard[self.leaderboard["status"] == "ok"]
        return ok["name"].head(k).tolist()

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``leaderboard.csv`` into ``run_dir``, and everything :meth:`load` needs to skip the
        probe on resume under ``probe/`` (``probe.json`` last: it marks the stage done); returns
        the leaderboard's path."""
        path = Path(run_dir) / "leaderboard.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.leaderboard.to_csv(path, index=False)
        d = Path(run_dir) / "probe"
        d.mkdir(exist_ok=True)
        arrays, index = {}, []
        for name, per_split in self.features.items():
            for split, a in per_split.items():
                index.append([name, split, f"f{len(index)}"])
                arrays[index[-1][2]] = a
        arrays.update({f"y_{k}": v for k, v in self.labels.items()})
        with open(d / "arrays.npz.tmp", "wb") as f:
            np.savez(f, **arrays)
        os.replace(d / "arrays.npz.tmp", d / "arrays.npz")
        meta = {"scorer": self.scorer, "features": index, "labels": sorted(self.labels), "rungs": self.rungs,
                "specs": {n: s.to_dict() for n, s in self.specs.items()}}
        (d / "probe.json").write_text(json.dumps(meta, default=str))
        return path

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "ProbeResult":
        """The probe result a run directory holds (written by :meth:`save`)."""
        d = Path(run_dir) / "probe"
        meta = json.loads((d / "probe.json").read_text())
        with np.load(d / "arrays.npz") as z:
            features: dict[str, dict[str, np.ndarray]] = {}
            for name, split, key in meta["features"]:
                features.setdefault(name, {})[split] = z[key]
            labels = {k: z[f"y_{k}"] for k in meta["labels"]}
        board = pd.read_csv(Path(run_dir) / "leaderboard.csv", keep_default_na=True)
        specs = {n: BackboneSpec.from_dict(s, f"{d / 'probe.json'}: {n}") for n, s in meta["specs"].items()}
        return cls(board, features, labels, meta["scorer"], specs, meta["rungs"])


def _resolve_cache(cache: FeatureCache | str | os.PathLike | bool | None, cache_dir: Any) -> FeatureCache | None:
    if cache_dir is not None:
        return FeatureCache(cache_dir)
    if cache is False:
        return None
    if cache is None or cache is True:
        return FeatureCache()
    return cache if isinstance(cache, FeatureCache) else FeatureCache(cache)


def check_finite(values: np.ndarray, name: str, what: str = "features") -> None:
    """Raise BackboneError (one line) when ``values`` (one row per item) hold inf or NaN."""
    arr = np.asarray(values)
    bad = ~np.isfinite(arr).reshape(len(arr), -1).all(axis=1) if arr.size else np.zeros(0, bool)
    if bad.any():
        raise BackboneError(
            f"candidate {name!r}: its {what} are not finite (inf or NaN) for {int(bad.sum())} of {len(arr)} items; "
            "the module is broken or needs other preprocessing. Remove it from the search space or fix the module."
        )


def _layer_name(spec: BackboneSpec, layer: str) -> str:
    return spec.layer if layer != LOGITS_LAYER and spec.layer else layer


def _features_for(
    spec: BackboneSpec,
    handle: str,
    layer: str,
    ctx: "_Ctx",
    idx: np.ndarray,
    ikey: str,
    on_batch: Callable[[int], None] | None,
    holder: "_Items | None" = None,
    final_features: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any], bool, str | None]:
    """Features (or source logits) of items ``idx`` (index key ``ikey``), from the cache when possible.

    ``final_features`` (source logits only): the same items' final features, letting the logits
    come from the classifier head alone when the module allows (see ``extract_source_logits``).

    Returns ``(array, meta, cached, cache_key)``.
    """
    key = None
    cache = ctx.store
    if cache is not None:
        fp = ctx.fingerprint(handle, spec)
        # An earlier-block candidate caches under its block's name, the final features under "final".
        key = cache.key(fp, ctx.data_fp, ikey, spec.input_size, _layer_name(spec, layer))
        hit = cache.load(key, ["features"])
        if hit is not None:
            return hit["features"], cache.meta(key) or {}, True, key
    start = time.perf_counter()
    ds = feature_dataset(ctx.data, idx, spec.input_size, ctx.batch_size)
    meta: dict[str, Any] = {"handle": handle, "input_size": spec.input_size, "layer": layer, "num_items": len(idx)}
    feats = _run_module(spec, handle, layer, ds, len(idx), on_batch, meta, holder, final_features)
    meta["seconds"] = time.perf_counter() - start
    check_finite(feats, spec.name, "source logits" if layer == LOGITS_LAYER else "features")  # never cached
    if cache is not None and key is not None:
        cache.save(key, {"features": feats}, meta)
    return feats, meta, False, key


def _run_module(spec: BackboneSpec, handle: str, layer: str, ds: tf.data.Dataset, num_items: int,
                on_batch: Callable[[int], None] | None, meta: dict[str, Any], holder: "_Items | None",
                final_features: np.ndarray | None) -> np.ndarray:
    """Run ``ds`` through ``handle``'s module (its classifier for source logits); adds the
    module's ``params``/``feature_dim`` to ``meta`` when it was loaded here."""
    if holder is not None and holder.keep_loaded:
        # Successive halving: keep the module (and its traced forward) for the next rung.
        if holder.backbone is None:
            holder.backbone = (HubBackbone(handle, input_size=spec.input_size, output_key=spec.output_key)
                               if layer == LOGITS_LAYER else HubBackbone.from_spec(spec))
            holder.forward = forward_fn(holder.backbone, images_dtype(ds))
        feats = extract_features(holder.backbone, ds, num_items=num_items, on_batch=on_batch, forward=holder.forward)
        meta.update(params=holder.backbone.num_params, feature_dim=holder.backbone.output_dim)
    elif layer == LOGITS_LAYER:
        feats = extract_source_logits(handle, ds, input_size=spec.input_size, output_key=spec.output_key,
                                      num_items=num_items, on_batch=on_batch, features=final_features)
    else:
        backbone = HubBackbone.from_spec(spec)
        try:
            feats = extract_features(backbone, ds, num_items=num_items, on_batch=on_batch)
            meta.update(params=backbone.num_params, feature_dim=backbone.output_dim)
        finally:
            # Free the module now so memory stays flat across candidates.
            del backbone
            gc.collect()
    return feats


def _all_features_pass(all_features: Callable[..., dict[str, tf.Tensor]], data: LabelledData, idx: np.ndarray,
                       size: int, batch_size: int, layers: set[str]) -> dict[str, np.ndarray] | None:
    """One pass of a module's ``all_features`` over items ``idx``: ``{layer: [N, C]}`` for
    ``layers`` ("head" = the module's own output); None if the module lacks one of them."""
    chunks: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    ds = feature_dataset(data, idx, size, batch_size)
    run = all_features
    modality = modalities.for_data(data)
    if images_dtype(ds) != tf.float32:  # raw items become model inputs inside the graph, as in forward_fn
        spec = modality.input_spec(size, images_dtype(ds))
        run = tf.function(lambda x: all_features(modality.to_model_input(x)), input_signature=[spec])
    for images in ds:
        out = run(images)
        if not layers <= set(out):
            return None
        for layer in layers:
            chunks[layer].append(out[layer].numpy().astype(np.float32, copy=False))
    return {layer: np.concatenate(c) for layer, c in chunks.items()}


DEFAULT_EXTRA_SCORERS = ("linear", "linear_ll", "knn", "logme", "leep", "nleep")
#: Successive halving keeps the modules of a rung's candidates loaded for the next rung (no reload,
#: no retrace) when the rung has at most this many candidates; larger rungs load one at a time.
#: Loading dominates per-candidate cost at small data (~5 s of ~6 s for a zoo module on 500 items),
#: and a zoo module holds 20-50 MB of weights, so a rung of 12 stays well under a GB.
HALVING_MAX_LOADED = 12


class _Items:
    """One candidate's features (or logits) for a growing set of item indices.

    Successive halving asks for nested index sets; only the items not held yet are featurized
    (cached under their own index set), and the full set is looked up in the cache first, so a
    candidate already probed on full data costs nothing.
    """

    def __init__(self, spec: BackboneSpec, handle: str, layer: str) -> None:
        self.spec, self.handle, self.layer = spec, handle, layer
        self.idx = np.empty(0, np.int64)
        self.values: np.ndarray | None = None
        self.featurized = 0  # items run through the module (cache misses)
        self.seconds = 0.0
        self.meta: dict[str, Any] = {}
        self.all_cached = True
        self.keep_loaded = False  # keep the module loaded between rungs (see probe's max_loaded)
        self.backbone: HubBackbone | None = None
        self.forward: Callable[[tf.Tensor], tf.Tensor] | None = None

    def release(self) -> None:
        """Drop a module kept loaded between rungs."""
        self.keep_loaded = False
        if self.backbone is not None:
            self.backbone, self.forward = None, None
            gc.collect()

    def lookup(self, want: np.ndarray, ctx: "_Ctx") -> np.ndarray:
        """Take what the cache has of ``want``; returns the indices still missing."""
        want = np.asarray(want, dtype=np.int64)
        missing = np.setdiff1d(want, self.idx)
        if len(missing) and ctx.store is not None and ctx.full_idx is not None and self.values is None:
            # Already probed on full data (e.g. a default run): slice that entry.
            key = ctx.store.key(ctx.fingerprint(self.handle, self.spec), ctx.data_fp, ctx.full_ikey, self.spec.input_size,
                                _layer_name(self.spec, self.layer))
            hit = ctx.store.load(key, ["features"])
            if hit is not None:
                self.idx, self.values = ctx.full_idx, np.asarray(hit["features"])
                self.meta = ctx.store.meta(key) or {}
                missing = np.setdiff1d(want, self.idx)
        if len(missing) and ctx.store is not None:
            # This very delta was featurized before (a warm re-run of the same rungs).
            key = self.delta_key(missing, ctx)
            hit = ctx.store.load(key, ["features"])
            if hit is not None:
                self.add(missing, np.asarray(hit["features"]), ctx.store.meta(key) or {}, cached=True, seconds=0.0)
                missing = np.empty(0, np.int64)
        return missing

    def delta_key(self, items: np.ndarray, ctx: "_Ctx") -> str:
        return ctx.store.key(ctx.fingerprint(self.handle, self.spec), ctx.data_fp, index_key(items, len(ctx.data)),
                             self.spec.input_size, _layer_name(self.spec, self.layer))

    def add(self, items: np.ndarray, feats: np.ndarray, meta: dict[str, Any], *, cached: bool, seconds: float) -> None:
        """Hold ``feats`` (rows for ``items``) beside what is held already."""
        self.seconds += seconds
        self.meta = {**meta, **self.meta} if self.meta else meta
        self.all_cached = self.all_cached and cached
        if not cached:
            self.featurized += len(items)
        idx = np.concatenate([self.idx, items])
        vals = feats if self.values is None else np.concatenate([self.values, feats])
        order = np.argsort(idx, kind="stable")
        self.idx, self.values = idx[order], vals[order]

    def get(self, want: np.ndarray, ctx: "_Ctx", on_batch: Callable[[int], None] | None) -> np.ndarray:
        want = np.asarray(want, dtype=np.int64)
        missing = self.lookup(want, ctx)
        if len(missing):
            t0 = time.perf_counter()
            feats, meta, cached, _ = _features_for(self.spec, self.handle, self.layer, ctx, missing,
                                                   index_key(missing, len(ctx.data)), on_batch, self)
            self.add(missing, feats, meta, cached=cached, seconds=time.perf_counter() - t0)
        assert self.values is not None
        return self.values[np.searchsorted(self.idx, want)]


class _SharedModule:
    """One loaded module whose ``all_features`` serves every layer candidate of one (handle, size):
    the probe featurizes a module once (once per rung with halving), not once per layer candidate."""

    def __init__(self, spec: BackboneSpec) -> None:
        self.spec = replace(spec, layer=None)
        self.backbone: HubBackbone | None = None
        self.all_features: Callable[..., dict[str, tf.Tensor]] | None = None

    def fill(self, members: list["_Items"], want: np.ndarray, ctx: "_Ctx") -> bool:
        """Give each member its layer's features for the items of ``want`` it lacks (after the
        cache), from one pass; the module loads on first need. Returns False (nothing done) when
        the module has no ``all_features`` or lacks a member's layer."""
        lacking = [(m, m.lookup(want, ctx)) for m in members]
        lacking = [(m, miss) for m, miss in lacking if len(miss)]
        if not lacking:
            return True
        start = time.perf_counter()
        if self.backbone is None:
            self.backbone = HubBackbone.from_spec(self.spec)
            self.all_features = self.backbone.all_features
        if self.all_features is None:
            return False
        union = np.unique(np.concatenate([miss for _, miss in lacking]))
        size = lacking[0][0].spec.input_size
        arrays = _all_features_pass(self.all_features, ctx.data, union, size, feature_batch(ctx.batch_size, size),
                                    {m.spec.layer or "head" for m, _ in lacking})
        if arrays is None:
            return False
        share = (time.perf_counter() - start) / len(lacking)
        for m, miss in lacking:
            feats = arrays[m.spec.layer or "head"][np.searchsorted(union, miss)]
            meta = {"handle": m.handle, "input_size": size, "layer": m.spec.layer or "head", "num_items": len(miss),
                    "params": self.backbone.num_params, "feature_dim": int(feats.shape[1]), "seconds": share,
                    "shared_pass": True}
            if ctx.store is not None:
                ctx.store.save(m.delta_key(miss, ctx), {"features": feats}, meta)
            m.add(miss, feats, meta, cached=False, seconds=share)
        return True


@dataclass
class _Ctx:
    """What one probe() call shares between its stages; lives for that call only."""

    data: LabelledData
    data_fp: str
    store: FeatureCache | None
    batch_size: int | None
    full_idx: np.ndarray | None = None
    full_ikey: str | None = None
    module_fps: dict[str, str] = field(default_factory=dict)  # module fingerprints of this call (rungs reuse them)

    def fingerprint(self, handle: str, spec: BackboneSpec | None = None) -> str:
        """The fingerprint of ``handle``'s module (with ``spec``'s preprocessor when ``handle`` is the
        encoder of a pair: features of one preprocessor are never read back for another), memoised
        for this probe() call."""
        pre = spec.preprocess_handle if spec is not None and handle == spec.handle else None
        memo = f"{resolve_handle(handle)}|{resolve_handle(pre) if pre else ''}"
        if memo not in self.module_fps:
            self.module_fps[memo] = backbone_fingerprint(handle, pre)
        return self.module_fps[memo]


def _group_key(spec: BackboneSpec) -> tuple[str, int, str | None, str | None]:
    """Candidates with the same key differ only in ``layer``: one module forward serves them all."""
    return (spec.handle, spec.input_size, spec.output_key, spec.preprocess_handle)


def _save_assembled(ctx: _Ctx, spec: BackboneSpec, handle: str, layer: str, values: np.ndarray,
                    meta: dict[str, Any], holder: _Items) -> str | None:
    """Cache halving's assembled full-data array under the full index key (what a default probe
    reads); returns that key. Skipped when the entry exists already."""
    store = ctx.store
    if store is None:
        return None
    key = store.key(ctx.fingerprint(handle, spec), ctx.data_fp, ctx.full_ikey, spec.input_size, _layer_name(spec, layer))
    if key not in store:
        info = {**meta, "num_items": int(len(values)), "seconds": holder.seconds, "assembled": True}
        store.save(key, {"features": np.asarray(values)}, info)
    return key


@dataclass
class _Featurized:
    """One candidate's full-data features (rows in ``_Ctx.full_idx`` order) and its TRAIN rows'
    source logits (None when no scorer needs them or it has no classifier)."""

    features: np.ndarray
    train_logits: np.ndarray | None
    meta: dict[str, Any]
    cached: bool
    keys: list[str | None]  # the features' and the logits' cache keys (the scores record's key)


class _Featurizer:
    """Featurizes the candidates: per-candidate item holders (halving's growing subsamples), one
    shared pass per module for layer candidates, and each candidate's full-data features."""

    def __init__(self, by_name: dict[str, BackboneSpec], ctx: _Ctx, *, wants_logits: bool, train_pos: np.ndarray,
                 halving: bool) -> None:
        self.by_name, self.ctx, self.wants_logits, self.train_pos, self.halving = (
            by_name, ctx, wants_logits, train_pos, halving)
        self.items: dict[str, tuple[_Items, _Items | None]] = {}
        # One loaded module per (handle, size) group of layer candidates (kept across halving rungs).
        self.modules: dict[tuple[str, int, str | None, str | None], _SharedModule | None] = {}

    def needs_logits(self, spec: BackboneSpec) -> bool:
        return bool(spec.classifier_handle) and self.wants_logits

    def holders(self, spec: BackboneSpec) -> tuple[_Items, _Items | None]:
        """``spec``'s (features, source logits or None) holders, made on first need."""
        if spec.name not in self.items:
            self.items[spec.name] = (
                _Items(spec, spec.handle, FEATURES_LAYER),
                _Items(spec, spec.classifier_handle, LOGITS_LAYER) if self.needs_logits(spec) else None)
        return self.items[spec.name]

    def keep_loaded(self, spec: BackboneSpec, keep: bool) -> None:
        """Whether ``spec``'s modules stay loaded (and traced) between rungs."""
        for h in self.holders(spec):
            if h is not None:
                h.keep_loaded = keep

    def fill_groups(self, names: Sequence[str], want: np.ndarray) -> dict[str, float]:
        """Featurize the layer candidates among ``names`` that share a module with one pass per
        module; returns each served candidate's share of the pass time (the rest fall back to
        their own loads)."""
        groups: dict[tuple[str, int, str | None, str | None], list[BackboneSpec]] = {}
        for n in names:
            if not self.by_name[n].extra.get("sources"):
                groups.setdefault(_group_key(self.by_name[n]), []).append(self.by_name[n])
        shares: dict[str, float] = {}
        for g, specs_g in groups.items():
            # A lone candidate uses the shared module only if a rung loaded it already.
            if (len(specs_g) < 2 and g not in self.modules) or self.modules.get(g, True) is None:
                continue
            shares.update(self._fill_group(g, specs_g, want))
        return shares

    def _fill_group(self, g: tuple[str, int, str | None, str | None], specs_g: list[BackboneSpec],
                    want: np.ndarray) -> dict[str, float]:
        members = [self.holders(sp)[0] for sp in specs_g]
        before = {m.spec.name: m.seconds for m in members}
        try:
            if g not in self.modules:
                self.modules[g] = _SharedModule(specs_g[0])
            if not self.modules[g].fill(members, want, self.ctx):
                self.modules[g] = None  # no all_features: members load their own truncated modules
        except (BackboneError, tf.errors.OpError, ValueError, OSError) as exc:
            log.warning("probe: shared pass over %s failed (%s); featurizing its layers one by one", g[0], exc)
            self.modules[g] = None
            return {}
        return {m.spec.name: m.seconds - before[m.spec.name] for m in members if m.seconds > before[m.spec.name]}

    def release_except(self, keep: Sequence[str]) -> None:
        """Drop the loaded modules of every candidate not in ``keep`` (eliminated by halving)."""
        for n, hs in self.items.items():
            if n not in keep:
                for h in hs:
                    if h is not None:
                        h.release()
        alive_groups = {_group_key(self.by_name[n]) for n in keep}
        for g in [g for g in self.modules if g not in alive_groups]:
            del self.modules[g]
        gc.collect()

    def rung_features(self, spec: BackboneSpec, tr: np.ndarray,
                      with_logits: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """``spec``'s features of items ``tr`` (a rung's subsample) and, if ``with_logits`` and
        it has a classifier, their source logits."""
        f_items, l_items = self.holders(spec)
        x = f_items.get(tr, self.ctx, None)
        check_finite(x, spec.name)
        lg = l_items.get(tr, self.ctx, None) if l_items is not None and with_logits else None
        if lg is not None:
            check_finite(lg, spec.name, "source logits")
        return x, lg

    def start_full(self, survivors: Sequence[str]) -> dict[str, float]:
        """Before the full-data pass: featurize the survivors' layer candidates one pass per module
        (see :meth:`fill_groups`, whose time shares it returns), then drop the shared modules."""
        if self.halving:
            # The survivors hold their rung items already: only the rest goes through the module.
            shared = self.fill_groups(survivors, self.ctx.full_idx)
        else:
            # Layer candidates of one module: one load and one pass into the cache under the full-data
            # keys, where the per-candidate pass finds them (without a cache it runs them alone).
            shared = self.fill_groups(survivors, self.ctx.full_idx) if self.ctx.store is not None else {}
            self.items.clear()
        self.modules.clear()
        return shared

    def full_features(self, spec: BackboneSpec, on_batch: Callable[[int], None]) -> _Featurized:
        """``spec``'s features of every probe item (and its TRAIN source logits), cached under the
        full index key."""
        return self._assemble(spec, on_batch) if self.halving else self._featurize(spec, on_batch)

    def _assemble(self, spec: BackboneSpec, on_batch: Callable[[int], None]) -> _Featurized:
        """Halving: complete the rung items held with the rest, then release the modules."""
        ctx, logits, lkey = self.ctx, None, None
        f_items, l_items = self.holders(spec)
        feats = f_items.get(ctx.full_idx, ctx, on_batch)
        meta, cached = f_items.meta, f_items.all_cached
        fkey = _save_assembled(ctx, spec, spec.handle, FEATURES_LAYER, feats, meta, f_items)
        if l_items is not None:
            logits_all = l_items.get(ctx.full_idx, ctx, on_batch)
            lkey = _save_assembled(ctx, spec, spec.classifier_handle, LOGITS_LAYER, logits_all, l_items.meta, l_items)
            logits = np.asarray(logits_all)[self.train_pos]
            cached = cached and l_items.all_cached
        for h in (f_items, l_items):
            if h is not None:
                h.release()
        return _Featurized(feats, logits, meta, cached, [fkey, lkey])

    def _featurize(self, spec: BackboneSpec, on_batch: Callable[[int], None]) -> _Featurized:
        """No halving: all items at once, from the cache or one module load per candidate."""
        ctx, logits, lkey = self.ctx, None, None
        feats, meta, cached, fkey = _features_for(spec, spec.handle, FEATURES_LAYER, ctx, ctx.full_idx, ctx.full_ikey,
                                                  on_batch)
        if self.needs_logits(spec):
            logits_all, _, cached_l, lkey = _features_for(
                spec, spec.classifier_handle, LOGITS_LAYER, ctx, ctx.full_idx, ctx.full_ikey, on_batch,
                final_features=feats if spec.layer is None else None)
            logits = np.asarray(logits_all)[self.train_pos]
            cached = cached and cached_l
        return _Featurized(feats, logits, meta, cached, [fkey, lkey])

    def featurized_items(self) -> dict[str, int]:
        """Items each held candidate ran through its modules (cache misses), over all rungs."""
        return {n: f.featurized + (lg.featurized if lg is not None else 0) for n, (f, lg) in self.items.items()}


def _no_progress(stage: str, done: int, total: int, message: str) -> None:
    """Stands in for an absent ``progress`` callback."""


class _HalvingRungs:
    """Successive halving's rungs: scores each surviving candidate with the ranking scorers on its
    features of a TRAIN subsample; the rung scores go into the candidates' leaderboard rows."""

    def __init__(self, featurizer: _Featurizer, board: Leaderboard, labels: np.ndarray, seed: int,
                 progress: ProgressFn, total: int) -> None:
        self.featurizer, self.board, self.labels, self.seed = featurizer, board, labels, seed
        self.progress, self.total = progress, total
        self.with_logits = any(s.needs_source_logits for s in board.scorers.ranking)

    def run(self, schedule: SuccessiveHalving, names: list[str], train_idx: np.ndarray) -> HalvingResult:
        """Run ``schedule`` over ``names``; the eliminated candidates' modules are released."""
        t_h = time.perf_counter()
        hres = schedule.run(names, train_idx, self.labels, self.score_rung)
        self.featurizer.release_except(hres.survivors)
        log.info("probe: successive halving %d -> %d candidates in %.1f s over %d rungs", len(names),
                 len(hres.survivors), time.perf_counter() - t_h, len(hres.rungs))
        return hres

    def score_rung(self, names: list[str], tr: np.ndarray, r: int) -> dict[str, tuple[float, float]]:
        """The halving callback (:data:`~autotransfer.probe.halving.RungScorer`): ``{name: (score,
        standard error)}`` of the candidates ``names`` on items ``tr``; a failed one is left out."""
        self.featurizer.release_except(names)  # candidates eliminated by the previous rung
        shared_s = self.featurizer.fill_groups(names, tr)
        per: dict[str, dict[str, ScoreResult]] = {}
        for name in names:
            res = self._score(self.featurizer.by_name[name], tr, r, len(names), shared_s.get(name, 0.0))
            if res is not None:
                per[name] = res
        scores = self.board.scorers.rung_scores(per)
        for n, v in scores.items():
            self.board.rows[n][f"score_rung{r}"] = v[0]
            self.board.rows[n]["rung"] = r
        return scores

    def _score(self, spec: BackboneSpec, tr: np.ndarray, r: int, num_alive: int,
               shared_seconds: float) -> dict[str, ScoreResult] | None:
        """One candidate's ranking scores on items ``tr``; None (its row marked failed) on failure."""
        row = self.board.row(spec)
        # Few candidates left: keep their modules loaded (and traced) for the next rung.
        self.featurizer.keep_loaded(spec, num_alive <= HALVING_MAX_LOADED)
        self.progress("probe", 0, self.total, f"rung {r}: {spec.name} ({len(tr)} items)")
        t0 = time.perf_counter()
        try:
            self.board.scorers.check_rankable(spec)
            x, lg = self.featurizer.rung_features(spec, tr, self.with_logits)
            res = self.board.scorers.score_ranking(x, self.labels[tr], lg, self.seed, spec.name)
        except UserInputError:
            raise
        except (BackboneError, tf.errors.OpError, ValueError, OSError, np.linalg.LinAlgError) as exc:
            self.board.fail(row, exc)
            return None
        row["halving_seconds"] = row.get("halving_seconds", 0.0) + time.perf_counter() - t0 + shared_seconds
        return res


class _FullDataPass:
    """The full-data probe of the (surviving) candidates, in the candidates' order: each one's
    features of every item, then its leaderboard row's scores (val/test accuracy included)."""

    def __init__(self, featurizer: _Featurizer, board: Leaderboard, pos: dict[str, np.ndarray],
                 progress: ProgressFn, total: int, full_rung: int | None) -> None:
        self.featurizer, self.board, self.pos, self.progress, self.total = featurizer, board, pos, progress, total
        self.full_rung = full_rung  # the ``rung`` column of full-data rows (None: no halving)
        self.shared: dict[str, float] = {}

    def run(self, candidates: Sequence[BackboneSpec], survivors: Sequence[str]) -> None:
        self.shared = self.featurizer.start_full(survivors)
        for i, spec in enumerate(candidates):
            if spec.name in survivors:
                row = self.board.row(spec)
                if self.full_rung is not None:
                    row["rung"] = self.full_rung
                got = self._features(i, spec, row)
                if got is not None:
                    self._score(i, spec, row, got)

    def _features(self, i: int, spec: BackboneSpec, row: dict[str, Any]) -> _Featurized | None:
        """``spec``'s full-data features, timed into ``row``; None (``row`` failed) on failure."""
        num_items = len(self.featurizer.ctx.full_idx)

        def on_batch(done: int) -> None:
            self.progress("probe", i, self.total, f"{spec.name}: featurizing {done}/{num_items}")

        self.progress("probe", i, self.total, f"{spec.name}: features")
        try:
            self.board.scorers.check_rankable(spec)
            t0 = time.perf_counter()
            got = self.featurizer.full_features(spec, on_batch)
            check_finite(got.features, spec.name)
            if got.train_logits is not None:
                check_finite(got.train_logits, spec.name, "source logits")
            # A shared layer pass computed this run's features just now: not a warm cache hit.
            row.update(feature_seconds=time.perf_counter() - t0 + self.shared.get(spec.name, 0.0),
                       cached=got.cached and spec.name not in self.shared,
                       params=got.meta.get("params", math.nan), feature_dim=int(got.features.shape[1]))
        except UserInputError:
            raise  # bad data fails every candidate: report it once, now
        except (BackboneError, tf.errors.OpError, ValueError, OSError) as exc:
            self.board.fail(row, exc)
            return None
        return got

    def _score(self, i: int, spec: BackboneSpec, row: dict[str, Any], got: _Featurized) -> None:
        split_feats = {s: np.asarray(got.features[self.pos[s]]) for s in SPLITS}
        self.progress("probe", i, self.total, f"{spec.name}: scoring")
        try:
            from_record = self.board.score(row, split_feats, got.train_logits, got.keys)
        except (ValueError, np.linalg.LinAlgError) as exc:  # the ranking scorer or the linear probe
            self.board.fail(row, exc)
            return
        main = self.board.scorers.main.name
        self.progress("probe", i + 1, self.total,
                      f"{spec.name}: {main} {row[f'score_{main}']:.3f}{' (cached)' if from_record else ''}")


def _probe_setup(candidates: Sequence[BackboneSpec], data: LabelledData, splits: Splits, scorers: ScorerSet,
                 store: FeatureCache | None, *, batch_size: int | None, seed: int,
                 halving: bool) -> tuple[_Featurizer, Leaderboard, dict[str, np.ndarray]]:
    """The featurizer of every item in ``splits``, the leaderboard of their labels, and each split's
    positions among those items. Raises UserInputError when candidate names repeat."""
    labels_all = np.asarray(data.labels, dtype=np.int64)
    split_idx = {s: np.asarray(getattr(splits, s), dtype=np.int64) for s in SPLITS}
    idx = np.unique(np.concatenate(list(split_idx.values())))
    pos = {s: np.searchsorted(idx, split_idx[s]) for s in SPLITS}
    y = {s: labels_all[split_idx[s]] for s in SPLITS}
    ctx = _Ctx(data, data.fingerprint() if store is not None else "", store, batch_size, idx, index_key(idx, len(data)))
    board = Leaderboard(scorers, halving=halving, labels=y, split_idx=split_idx, seed=seed, store=store,
                        num_classes=len(data.class_names))
    by_name = {c.name: c for c in candidates}
    if len(by_name) != len(candidates):
        raise UserInputError("probe: candidate names must be unique.")
    featurizer = _Featurizer(by_name, ctx, wants_logits=scorers.wants_logits, train_pos=pos["train"], halving=halving)
    return featurizer, board, pos


def _run_halving(featurizer: _Featurizer, board: Leaderboard, data: LabelledData, names: list[str], *, seed: int,
                 progress: ProgressFn, total: int, eta: int, min_per_class: int, top_k: int, rungs: int | None,
                 keep_within: float) -> HalvingResult:
    """Successive halving of ``names`` on growing stratified subsamples of TRAIN (see :func:`probe`)."""
    schedule = SuccessiveHalving(eta=eta, min_per_class=min_per_class, top_k=top_k, rungs=rungs, seed=seed,
                                 keep_within=keep_within)
    labels_all = np.asarray(data.labels, dtype=np.int64)
    return _HalvingRungs(featurizer, board, labels_all, seed, progress, total).run(schedule, names,
                                                                                 board.split_idx["train"])


def _probe_result(board: Leaderboard, featurizer: _Featurizer, candidates: Sequence[BackboneSpec],
                  hres: HalvingResult | None, *, multi_source: int, full_rung: int, total: int) -> ProbeResult:
    """The ranked leaderboard and features of a finished probe (raises when every candidate failed)."""
    board.check_any_ok(total)
    if hres is not None:  # items run through the modules, all rungs
        for name, n in featurizer.featurized_items().items():
            board.rows[name]["featurized_items"] = n
    table, specs_added = board.table(candidates, multi_source, full_rung,
                                     hres.eliminated_order() if hres is not None else None)
    return ProbeResult(leaderboard=table, features=board.features, labels=board.labels, scorer=board.scorers.name,
                       specs=specs_added, rungs=[r.to_dict() for r in hres.rungs] if hres is not None else [])


def probe(candidates: Sequence[BackboneSpec], data: LabelledData, splits: Splits, *,
          scorer: str | Scorer | CombinedScore = DEFAULT_SCORER,
          extra_scorers: Sequence[str | Scorer] = DEFAULT_EXTRA_SCORERS,
          cache: FeatureCache | str | os.PathLike | bool | None = None, cache_dir: str | os.PathLike | None = None,
          batch_size: int | None = None, seed: int = 0, progress: ProgressFn | None = None, halving: bool = D.halving,
          eta: int = 3, min_per_class: int = 5, top_k: int = D.top_k, rungs: int | None = None,
          keep_within: float = 2.0, multi_source: int = D.multi_source) -> ProbeResult:
    """Score every candidate on frozen features; returns the leaderboard (best first).

    Args:
        candidates: backbones to score.
        data, splits: the dataset and its index splits; scorers see TRAIN features only.
        scorer: the ranking scorer: a registered name (``linear_ll``, ``linear``, ``knn``, ``logme``, ``leep``,
            ``nleep``), a Scorer, or ``"combined"`` (the default: LogME and N-LEEP) / a :class:`CombinedScore`
            (mean of per-scorer z-scores across the candidates, computed after all are scored); ``score``/``std``.
        extra_scorers: more scorers, one ``score_<name>`` column each (not used for ranking;
            ``leep`` is NaN for candidates without ``classifier_handle``). The ranking scorer also
            gets its ``score_<name>`` column, and ``score_combined`` is always added.
        cache: a FeatureCache, a cache directory, None/True for the default directory
            (``$AUTOTRANSFER_CACHE_DIR`` or the user cache dir), or False for no caching.
        cache_dir: shorthand for ``cache=FeatureCache(cache_dir)``.
        batch_size: featurization batch size; None picks one per input size (:func:`auto_batch_size`).
        seed: CV fold seed (and the halving subsamples' seed).
        progress: ``progress(stage, done, total, message)`` callback.
        halving: successive halving (:mod:`autotransfer.probe.halving`): rank on growing stratified subsamples
            of TRAIN (``min_per_class * eta**r`` per class), keep the best ``max(top_k, ceil(n/eta))`` per
            rung, full-data probe only for the survivors. Adds columns ``rung`` (last rung reached; survivors
            get ``len(rungs)``, the full rung), ``score_rung<r>``, ``halving_seconds`` and ``featurized_items``.
            Eliminated candidates have NaN ``score``/``val_accuracy``/``test_accuracy`` and no features.
        eta, min_per_class, top_k: the halving schedule (see above).
        rungs: cap on the number of subsample rungs (implies ``halving=True``).
        keep_within: halving also keeps candidates within this many standard errors (CV folds)
            of a rung's cut-off score (at most as many again as the rank keeps); 0 = the classic rule.
        multi_source: if >= 2, add a candidate ``concat(a+b...)`` whose features concatenate the
            top ``multi_source`` candidates' features, scored the same way (its spec, with
            ``extra={"sources": [names], "source_specs": [dicts]}``, is in ``ProbeResult.specs``).

    A candidate that cannot be loaded or run becomes a row with status ``"failed: ..."`` and NaN
    scores; if every candidate fails, the first error is raised.
    """
    if not candidates:
        raise UserInputError("probe: no candidates given. Add at least one backbone to the search space.")
    halving = bool(halving or rungs)
    scorers = ScorerSet.resolve(scorer, extra_scorers)
    store = _resolve_cache(cache, cache_dir)
    featurizer, board, pos = _probe_setup(candidates, data, splits, scorers, store, batch_size=batch_size, seed=seed,
                                          halving=halving)
    report = progress if progress is not None else _no_progress
    total = len(candidates)
    hres = None
    if halving:  # rank on growing subsamples of TRAIN first; only the survivors go on to full data
        hres = _run_halving(featurizer, board, data, [c.name for c in candidates], seed=seed, progress=report,
                            total=total, eta=eta, min_per_class=min_per_class, top_k=top_k, rungs=rungs,
                            keep_within=keep_within)
    survivors = hres.survivors if hres is not None else [c.name for c in candidates]
    full_rung = len(hres.rungs) if hres is not None else 0
    _FullDataPass(featurizer, board, pos, report, total, full_rung if halving else None).run(candidates, survivors)
    return _probe_result(board, featurizer, candidates, hres, multi_source=multi_source, full_rung=full_rung,
                         total=total)
