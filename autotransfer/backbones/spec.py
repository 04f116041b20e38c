"""BackboneSpec: a candidate backbone as data (a handle plus what we must know to feed it)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from autotransfer.errors import UserInputError, unknown_keys

#: Keys of a candidate fitted on the run's own texts (``fit: tfidf``) instead of loaded from a handle.
FIT_KEYS = ("fit", "analyzer", "ngram_range")
#: What ``fit`` may name, and each one's analyzers with their default n-gram range.
FIT_KINDS = {"tfidf": {"word": [1, 2], "char": [2, 5]}}
#: The longest n-gram a fitted candidate may ask for.
MAX_NGRAM = 8
#: Keys a search-space candidate may have (the YAML schema; see docs/ARCHITECTURE.md).
CANDIDATE_KEYS = ("name", "handle", "input_size", "classifier_handle", "preprocess_handle", "output_key", "layer",
                  "layers", "input_sizes", *FIT_KEYS)


@dataclass(frozen=True)
class BackboneSpec:
    """One candidate backbone from a search space.

    ``handle`` is a local TF-Hub-format directory, ``file://...``, ``zoo://NAME/OUTPUT`` (the offline
    zoo) or a tfhub.dev / Kaggle URL. ``classifier_handle`` optionally points at the same network with
    its source-task head, for scorers that use source-label predictions (LEEP). ``preprocess_handle``
    (text) makes ``handle`` the encoder of a TF-Hub BERT-style pair: the preprocessor maps strings to
    ``{input_word_ids, input_mask, input_type_ids}``, the encoder those to ``pooled_output`` (or
    ``output_key``), and the two act as one string-in backbone. ``layer`` names an
    earlier block whose pooled output is used instead of the final features (None = final);
    ``base`` is the name of the search-space entry this candidate was expanded from. ``fit``
    (``{kind, analyzer, ngram_range}``) marks a candidate fitted on the run's labelled texts
    (TF-IDF): its handle is empty until the run writes the module (:meth:`with_handle`).
    """

    name: str
    handle: str
    input_size: int
    classifier_handle: str | None = None
    preprocess_handle: str | None = None
    output_key: str | None = None
    layer: str | None = None
    base: str | None = None
    fit: dict[str, Any] | None = field(default=None, hash=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_dict(cls, d: Any, where: str, *, strict: bool = False, sized: bool = True) -> "BackboneSpec":
        """Build from a YAML mapping; ``where`` names the place for error messages.

        ``strict`` (a user's search space): keys outside :data:`CANDIDATE_KEYS` are an error with a
        "did you mean"; otherwise (``to_dict`` round trips) they are kept in ``extra``.
        ``sized=False`` (a text space): ``input_size`` does not apply and may be left out (0).
        """
        if not sized and isinstance(d, dict) and "input_size" not in d:
            d = {**d, "input_size": 0}
        if not sized and isinstance(d, dict) and (d["input_size"] != 0 or "input_sizes" in d or "layers" in d):
            raise UserInputError(f"{where}: candidate {d.get('name', '?')!r} is in a text search space, where "
                                 "'input_size', 'input_sizes' and 'layers' do not apply. Remove them.")
        if not isinstance(d, dict):
            raise UserInputError(f"{where}: each candidate must be a mapping with 'name', 'handle' and 'input_size'. Got {d!r}.")
        if strict:
            unknown_keys(d, CANDIDATE_KEYS, f"{where} (candidate {d.get('name', '?')!r})")
        known = {*CANDIDATE_KEYS, "base"}
        fit = _fit_of(d, where, strict=strict, sized=sized)
        if fit is not None:
            d = {**d, "handle": d.get("handle") or ""}  # empty until the run fits the module
        missing = [k for k in ("name", "handle", "input_size") if k not in d]
        if missing:
            raise UserInputError(f"{where}: candidate {d.get('name', '?')!r} is missing {', '.join(missing)}. Add it (e.g. 'input_size: 224').")
        size = d["input_size"]
        # 0 = no input size (a text candidate, as a round trip of to_dict writes it)
        checked = sized and (strict or size != 0)
        for key, value in [("input_size", size)] * checked + [("input_sizes", s) for s in d.get("input_sizes") or []]:
            if not isinstance(value, int) or isinstance(value, bool) or not 8 <= value <= 1024:
                raise UserInputError(f"{where}: {key!r} of candidate {d['name']!r} must be integers in [8, 1024]. Got {value!r}.")
        for key in ("layers", "input_sizes"):
            if key in d and not (isinstance(d[key], list) and d[key]):
                raise UserInputError(f"{where}: {key!r} of candidate {d['name']!r} must be a non-empty list. Got {d[key]!r}.")
        for key in ("name", "handle")[: 1 if fit is not None else 2]:
            if not isinstance(d[key], str) or not d[key].strip():
                raise UserInputError(f"{where}: {key!r} of candidate {d.get('name')!r} must be a non-empty string. Got {d[key]!r}.")
        if d.get("preprocess_handle") is not None:
            _check_preprocess_handle(d, where, sized=sized and (strict or size != 0))
        return cls(
            name=d["name"],
            handle=d["handle"],
            input_size=size,
            classifier_handle=d.get("classifier_handle"),
            preprocess_handle=d.get("preprocess_handle"),
            output_key=d.get("output_key"),
            layer=d.get("layer"),
            base=d.get("base"),
            fit=fit,
            extra={k: v for k, v in d.items() if k not in known or k in ("layers", "input_sizes")},
        )

    @property
    def is_fitted(self) -> bool:
        """True for a candidate fitted on the run's texts (``fit`` set): nothing in it fine-tunes."""
        return self.fit is not None

    def with_handle(self, handle: str) -> "BackboneSpec":
        """This candidate loaded from ``handle`` (a fitted candidate's written module)."""
        return replace(self, handle=str(handle))

    @property
    def is_pair(self) -> bool:
        """True for an encoder + preprocessor pair (``preprocess_handle`` set)."""
        return self.preprocess_handle is not None

    def expand(self) -> list["BackboneSpec"]:
        """One candidate per (layer, input size) the entry lists in ``layers`` / ``input_sizes``.

        The first combination keeps the entry's own name; the others are named
        ``NAME@LAYER`` / ``NAME@SIZE`` / ``NAME@LAYER@SIZE``. ``final`` means the module's output.
        """
        layers = self.extra.get("layers") or [self.layer or "final"]
        sizes = self.extra.get("input_sizes") or [self.input_size]
        rest = {k: v for k, v in self.extra.items() if k not in ("layers", "input_sizes")}
        out = []
        for layer in layers:
            for size in sizes:
                tags = ([] if layer in ("final", self.layer) else [str(layer)]) + ([] if size == self.input_size else [str(size)])
                out.append(replace(self, name="@".join([self.name, *tags]), input_size=int(size),
                                   layer=None if layer == "final" else layer, base=self.name, extra=rest))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (inverse of ``from_dict``)."""
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        fit = d.pop("fit")
        if fit is not None:  # the YAML's flat form: fit: tfidf, analyzer, ngram_range
            d.update(fit=fit["kind"], analyzer=fit["analyzer"], ngram_range=list(fit["ngram_range"]))
            d = {k: v for k, v in d.items() if k != "handle" or v}
        return {k: v for k, v in d.items() if v is not None}


def _fit_of(d: dict, where: str, *, strict: bool, sized: bool) -> dict[str, Any] | None:
    """A candidate's ``fit`` settings (``{kind, analyzer, ngram_range}``, defaults filled), or None
    when it has no ``fit``; one message per misuse, naming the field and the fix."""
    name = d.get("name", "?")
    what = f"{where}: candidate {name!r}"
    if "fit" not in d:
        stray = [k for k in FIT_KEYS if k in d]
        if stray:
            raise UserInputError(f"{what} has {', '.join(map(repr, stray))}, which only a fitted candidate takes. "
                                 "Add 'fit: tfidf', or remove it.")
        return None
    kind = d["fit"]
    if kind not in FIT_KINDS:
        raise UserInputError(f"{what}: 'fit' must be one of {', '.join(FIT_KINDS)}. Got {kind!r}.")
    if sized and strict:  # round trips (to_dict) pass no modality: a text candidate's input_size 0 says it
        raise UserInputError(f"{what}: 'fit: {kind}' learns from texts: put it in a search space with "
                             "'modality: text'.")
    if strict and d.get("handle") is not None:
        raise UserInputError(f"{what}: a 'fit: {kind}' candidate is fitted on the run's texts and takes no "
                             "'handle'. Remove 'handle'.")
    analyzers = FIT_KINDS[kind]
    analyzer = d.get("analyzer", next(iter(analyzers)))
    if analyzer not in analyzers:
        raise UserInputError(f"{what}: 'analyzer' must be one of {', '.join(analyzers)}. Got {analyzer!r}.")
    ngram_range = d.get("ngram_range", analyzers[analyzer])
    ok = (isinstance(ngram_range, (list, tuple)) and len(ngram_range) == 2
          and all(isinstance(n, int) and not isinstance(n, bool) for n in ngram_range)
          and 1 <= ngram_range[0] <= ngram_range[1] <= MAX_NGRAM)
    if not ok:
        raise UserInputError(f"{what}: 'ngram_range' must be [low, high], integers with 1 <= low <= high <= "
                             f"{MAX_NGRAM} (e.g. {analyzers[analyzer]}). Got {ngram_range!r}.")
    return {"kind": kind, "analyzer": analyzer, "ngram_range": [int(n) for n in ngram_range]}


def _check_preprocess_handle(d: dict, where: str, *, sized: bool) -> None:
    """A pair's ``preprocess_handle``: a handle string of a known scheme, other than the encoder's,
    on a text candidate (an image module takes pixels, not token ids)."""
    from autotransfer.backbones.sources import known_schemes

    name, value = d.get("name", "?"), d["preprocess_handle"]
    what = f"{where}: 'preprocess_handle' of candidate {name!r}"
    if not isinstance(value, str) or not value.strip():
        raise UserInputError(f"{what} must be a non-empty string (a handle like "
                             f"https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3). Got {value!r}.")
    scheme = value.split("://", 1)[0] if "://" in value else "file"
    if scheme not in known_schemes():
        raise UserInputError(f"{what} has the unknown scheme {scheme!r} ({value!r}). Use a local directory or one of "
                             f"{', '.join(s + '://' for s in known_schemes())}.")
    if d.get("classifier_handle") is not None:
        raise UserInputError(f"{what}: a pair has no source-task head for classifier_handle (the LEEP scorer's): "
                             "remove classifier_handle.")
    if value == d["handle"]:
        raise UserInputError(f"{what} is its 'handle' too. 'handle' is the encoder, 'preprocess_handle' the "
                             "preprocessor that feeds it: give each its own module.")
    if sized:
        raise UserInputError(f"{what}: encoder + preprocessor pairs are text backbones. Put the candidate in a "
                             "search space with 'modality: text' (and no 'input_size').")
