"""Signature names, inputs and outputs from a ``saved_model.pb``, without importing TensorFlow.

The report must stay cheap to (re)render, so instead of ``tf.saved_model.load`` this walks the
protobuf wire format for the few fields it needs:
SavedModel.meta_graphs(2) -> MetaGraphDef.signature_def(5) map<string, SignatureDef>;
SignatureDef.inputs(1)/outputs(2) map<string, TensorInfo>, method_name(3);
TensorInfo.name(1), dtype(2), tensor_shape(3) -> TensorShapeProto.dim(2).size(1), unknown_rank(3).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

_DTYPES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    9: "int64", 10: "bool", 14: "bfloat16", 19: "float16",
}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(field_number, wire_type, value)``; length-delimited values are raw bytes."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:  # groups (3/4) are not used by these messages
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def _map_entry(buf: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for f, _, v in _fields(buf):
        if f == 1:
            key = v.decode("utf-8", "replace")
        elif f == 2:
            value = v
    return key, value


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _tensor_info(buf: bytes) -> dict[str, Any]:
    info: dict[str, Any] = {"dtype": None, "shape": None}
    for f, _, v in _fields(buf):
        if f == 2:
            info["dtype"] = _DTYPES.get(v, f"dtype{v}")
        elif f == 3:
            dims: list[int | None] = []
            unknown = False
            for sf, _, sv in _fields(v):
                if sf == 2:
                    size = next((_signed64(dv) for df, _, dv in _fields(sv) if df == 1), 0)
                    dims.append(None if size < 0 else size)
                elif sf == 3 and sv:
                    unknown = True
            info["shape"] = None if unknown else dims
    return info


def _signature(buf: bytes) -> dict[str, Any]:
    sig: dict[str, Any] = {"inputs": {}, "outputs": {}, "method": None}
    for f, _, v in _fields(buf):
        if f in (1, 2):
            name, ti = _map_entry(v)
            sig["inputs" if f == 1 else "outputs"][name] = _tensor_info(ti)
        elif f == 3:
            sig["method"] = v.decode("utf-8", "replace")
    return sig


def read_signatures(path: str | Path) -> list[dict[str, Any]] | None:
    """``[{name, method, inputs{name: {dtype, shape}}, outputs{...}}]`` sorted by name, or ``None``.

    ``None`` means the file is missing or not parseable; internal ``__saved_model_init_op`` is skipped.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        buf = path.read_bytes()
        sigs: dict[str, dict[str, Any]] = {}
        for f, wire, v in _fields(buf):
            if f != 2 or wire != 2:
                continue
            for mf, mwire, mv in _fields(v):
                if mf == 5 and mwire == 2:
                    name, sig = _map_entry(mv)
                    if not name.startswith("__"):
                        sigs[name] = {"name": name, **_signature(sig)}
        return [sigs[k] for k in sorted(sigs)]
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def format_shape(shape: list[int | None] | None) -> str:
    """``[None, 224, 224, 3]`` -> ``(?, 224, 224, 3)``; unknown rank -> ``?``."""
    if shape is None:
        return "?"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
