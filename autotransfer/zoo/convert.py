"""Map ``efficientnet_pytorch``-style state dicts onto the Keras model and module paths."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from autotransfer.errors import UserInputError
from autotransfer.zoo.efficientnet_lite import LiteSpec, block_configs

__all__ = ["WeightSlot", "weight_slots", "load_torch_weights", "module_weights", "block_names"]

_BN_PARTS = [("gamma", "weight"), ("beta", "bias"),
             ("moving_mean", "running_mean"), ("moving_variance", "running_var")]


def _conv(w: np.ndarray) -> np.ndarray:  # OIHW -> HWIO
    return w.transpose(2, 3, 1, 0)


def _depthwise(w: np.ndarray) -> np.ndarray:  # (C,1,kh,kw) -> (kh,kw,C,1)
    return w.transpose(2, 3, 0, 1)


def _dense(w: np.ndarray) -> np.ndarray:  # (out,in) -> (in,out)
    return w.T


def _same(w: np.ndarray) -> np.ndarray:
    return w


@dataclass(frozen=True)
class WeightSlot:
    """Where one weight lives in each world: module path, Keras layer/index, torch key."""

    path: str            # module variable name, e.g. "block_03/expand_conv/kernel"
    layer: str           # Keras layer name, e.g. "block_03_expand_conv"
    index: int           # position in ``layer.get_weights()``
    torch_key: str       # e.g. "_blocks.3._expand_conv.weight"
    transform: Callable[[np.ndarray], np.ndarray]
    trainable: bool

    @property
    def block(self) -> str:
        return self.path.split("/", 1)[0]


def _conv_slots(block: str, part: str, torch_prefix: str, kind: str = "conv") -> list[WeightSlot]:
    wname, fn = ("depthwise_kernel", _depthwise) if kind == "depthwise" else ("kernel", _conv)
    return [WeightSlot(f"{block}/{part}/{wname}", f"{block}_{part}", 0, f"{torch_prefix}.weight", fn, True)]


def _bn_slots(block: str, part: str, torch_prefix: str) -> list[WeightSlot]:
    return [WeightSlot(f"{block}/{part}/{k}", f"{block}_{part}", i, f"{torch_prefix}.{t}", _same,
                       k in ("gamma", "beta"))
            for i, (k, t) in enumerate(_BN_PARTS)]


def weight_slots(spec: LiteSpec, include_top: bool = True) -> list[WeightSlot]:
    """All weights in forward order (earliest block first)."""
    slots = _conv_slots("stem", "conv", "_conv_stem") + _bn_slots("stem", "bn", "_bn0")
    for i, b in enumerate(block_configs(spec)):
        t = f"_blocks.{i}"
        if b.expand_ratio != 1:
            slots += _conv_slots(b.name, "expand_conv", f"{t}._expand_conv")
            slots += _bn_slots(b.name, "expand_bn", f"{t}._bn0")
        slots += _conv_slots(b.name, "depthwise_conv", f"{t}._depthwise_conv", "depthwise")
        slots += _bn_slots(b.name, "depthwise_bn", f"{t}._bn1")
        slots += _conv_slots(b.name, "project_conv", f"{t}._project_conv")
        slots += _bn_slots(b.name, "project_bn", f"{t}._bn2")
    slots += _conv_slots("head", "conv", "_conv_head") + _bn_slots("head", "bn", "_bn1")
    if include_top:
        slots += [WeightSlot("classifier/kernel", "classifier", 0, "_fc.weight", _dense, True),
                  WeightSlot("classifier/bias", "classifier", 1, "_fc.bias", _same, True)]
    return slots


def block_names(spec: LiteSpec, include_top: bool = True) -> list[str]:
    """Ordered block names: ``stem``, ``block_00`` ..., ``head`` [, ``classifier``]."""
    names = ["stem"] + [b.name for b in block_configs(spec)] + ["head"]
    return names + ["classifier"] if include_top else names


def load_torch_weights(model, spec: LiteSpec, state_dict: Mapping[str, np.ndarray],
                       source: str, include_top: bool = True) -> None:
    """Copy a torch state dict into the Keras model built by ``build_keras_model``.

    Every trainable/statistic tensor must be used exactly once (``num_batches_tracked`` and,
    for a headless model, ``_fc.*`` are the only ones allowed to remain).
    """
    slots = weight_slots(spec, include_top)
    per_layer: dict[str, list[np.ndarray]] = OrderedDict()
    for s in slots:
        if s.torch_key not in state_dict:
            raise UserInputError(f"{source}: weight {s.torch_key!r} missing; not an {spec.name} state dict")
        per_layer.setdefault(s.layer, []).append(s.transform(np.asarray(state_dict[s.torch_key], np.float32)))
    used = {s.torch_key for s in slots}
    extra = [k for k in state_dict if k not in used and not k.endswith("num_batches_tracked")
             and not (not include_top and k.startswith("_fc."))]
    if extra:
        raise UserInputError(f"{source}: unexpected weights for {spec.name}: {extra[:5]}")
    for name, values in per_layer.items():
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [v.shape for v in values]
        if expected != got:
            raise UserInputError(f"{source}: shape mismatch in {name}: model {expected}, file {got}")
        layer.set_weights(values)


def module_weights(model, spec: LiteSpec, include_top: bool = True) -> "OrderedDict[str, tuple[np.ndarray, bool]]":
    """Read the Keras model's weights out as ``{module_path: (value, trainable)}`` in order."""
    out: OrderedDict[str, tuple[np.ndarray, bool]] = OrderedDict()
    for s in weight_slots(spec, include_top):
        out[s.path] = (np.asarray(model.get_layer(s.layer).get_weights()[s.index]), s.trainable)
    return out
