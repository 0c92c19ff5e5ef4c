"""Read a ``.tflite`` flatbuffer without running it: ops, signatures, shapes (no TensorFlow).

Used by ``splitfed-models inspect`` and by the build, which refuses any
artifact containing a custom or Flex (``Flex*``, i.e. TensorFlow-kernel) op:
edge nodes run the plain LiteRT builtin kernels only.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from protocol.errors import ModelError

try:
    from ai_edge_litert import schema_py_generated as _schema
except ImportError:  # pragma: no cover - boards with tflite-runtime only
    _schema = None

_CUSTOM = 32  # BuiltinOperator.CUSTOM


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorInfo:
    """A signature input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """What ``inspect`` prints: hash, size, op names and signatures."""

    sha256: str
    size: int
    ops: tuple[str, ...]  # builtin op names, or "CUSTOM:<code>"
    signatures: dict[str, tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]]

    @property
    def non_builtin_ops(self) -> tuple[str, ...]:
        """Custom and Flex ops (empty for an artifact edge nodes can run)."""
        return tuple(op for op in self.ops if op.startswith("CUSTOM"))


def _enum_names(cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def read_model_info(data: bytes) -> ModelInfo:
    """Parse ``.tflite`` bytes; :class:`ModelError` if they are not a TFLite model."""
    if _schema is None:  # pragma: no cover
        raise ModelError("inspecting .tflite files needs ai-edge-litert")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError("not a TFLite flatbuffer (missing TFL3 identifier)")
    try:
        model = _schema.Model.GetRootAsModel(data, 0)
        op_names = _enum_names(_schema.BuiltinOperator)
        type_names = _enum_names(_schema.TensorType)
        ops = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            custom = oc.CustomCode()
            if code == _CUSTOM or custom is not None:
                ops.append("CUSTOM:" + (custom.decode("utf-8", "replace") if custom else "?"))
            else:
                ops.append(op_names.get(code, f"OP{code}"))
        sigs: dict[str, tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]] = {}
        for i in range(model.SignatureDefsLength()):
            sd = model.SignatureDefs(i)
            sg = model.Subgraphs(sd.SubgraphIndex())

            def _tensors(n: int, get: Any, sg: Any = sg) -> tuple[TensorInfo, ...]:
                out = []
                for j in range(n):
                    tm = get(j)
                    t = sg.Tensors(tm.TensorIndex())
                    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
                    out.append(TensorInfo(name=tm.Name().decode(), shape=shape,
                                          dtype=type_names.get(t.Type(), "?").lower()))
                return tuple(sorted(out, key=lambda ti: ti.name))

            sigs[sd.SignatureKey().decode()] = (_tensors(sd.InputsLength(), sd.Inputs),
                                                _tensors(sd.OutputsLength(), sd.Outputs))
    except (AttributeError, IndexError, ValueError, UnicodeDecodeError, struct.error) as exc:
        raise ModelError(f"malformed TFLite flatbuffer: {exc!r}") from exc
    return ModelInfo(sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                     ops=tuple(sorted(set(ops))), signatures=sigs)


def check_builtin_only(data: bytes) -> ModelInfo:
    """Raise :class:`ModelError` naming every custom/Flex op in the model."""
    info = read_model_info(data)
    if info.non_builtin_ops:
        raise ModelError("model needs non-builtin ops: " + ", ".join(info.non_builtin_ops))
    return info


def _fmt(tensors: tuple[TensorInfo, ...]) -> str:
    return ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in tensors)


def format_model_info(info: ModelInfo) -> str:
    """Human-readable summary (one line per signature tensor)."""
    lines = [f"sha256 {info.sha256}", f"size   {info.size} bytes", "ops    " + " ".join(info.ops)]
    for name in sorted(info.signatures):
        inputs, outputs = info.signatures[name]
        lines.append(f"signature {name}")
        lines.append("  in : " + (_fmt(inputs) or "-"))
        lines.append("  out: " + (_fmt(outputs) or "-"))
    return "\n".join(lines)
