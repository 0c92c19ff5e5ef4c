"""Artifact manifests: what a client/server ``.tflite`` pair is, and its hashes (pure, no TF).

A manifest is the JSON file written next to ``client.tflite`` and
``server.tflite`` by ``splitfed-models build``. It is what every other
package keys on: the agent loads the client half by manifest, the server the
server half, envelopes and the ledger quote ``client_sha256`` /
``server_sha256``. A manifest of ``kind == "full"`` (``<model>/full/``,
the federated ``fl-dpsgd`` tier) describes ONE file, ``model.tflite``, holding
the whole model: ``cut`` is the number of layers, ``client_*`` name the file,
its hash and every weight, ``server_file``/``server_sha256`` are empty and
``server_weight_shapes`` is ``()``; ``kind`` is written to JSON only for full
manifests, so split manifests keep their bytes. :func:`load_manifest`
validates every field and reports all problems at once; it does not hash
the model files (the runtime does, on the very bytes it loads).

:func:`weights_sha256` is the canonical hash of a weight list (ledger,
gateway aggregation, model proposals); it is
:func:`protocol.ledger_msgs.weights_digest`, so every package hashes weights
the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from protocol.errors import ConfigError, ModelError

FORMAT_VERSION = 1
ARTIFACTS_ROOT = Path(__file__).resolve().parent / "artifacts"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """Description of one exported client/server pair (see module docstring)."""

    model_id: str
    cut: int
    input_shape: tuple[int, int]  # (channels, length)
    activation_shape: Shape  # per sample, channels-last, without batch
    num_classes: int
    max_batch: int
    client_file: str
    server_file: str
    client_sha256: str
    server_sha256: str
    norm_mean: tuple[float, ...]  # per input channel
    norm_std: tuple[float, ...]
    norm_per_window: bool  # z-score each window before norm_mean/norm_std (models.preprocess)
    client_weight_shapes: tuple[Shape, ...]
    server_weight_shapes: tuple[Shape, ...]
    dataset: str
    window: dict[str, Any] = field(hash=False)
    input_dtype: str = "float32"
    activation_dtype: str = "float32"
    label_dtype: str = "int32"
    optimizer: dict[str, Any] = field(default_factory=dict, hash=False)
    seed: int = 0
    format_version: int = FORMAT_VERSION
    # "split": client/server pair at ``cut``. "full": the whole model in ``client_file``
    # (federated tier, ``fl-dpsgd``): cut = number of layers, activation_shape =
    # (num_classes,), all weights in client_weight_shapes, server_file/_sha256 "" and
    # no server weights. Omitted from the JSON when "split" (older manifests stay valid).
    kind: str = "split"
    location: Path | None = field(default=None, compare=False)  # directory it was loaded from

    def __post_init__(self) -> None:
        problems = _validate(self)
        if problems:
            raise ModelError("invalid manifest: " + "; ".join(problems))

    @property
    def directory(self) -> Path:
        """Where the ``.tflite`` files are: the manifest's directory, else the packaged one."""
        if self.location is not None:
            return self.location
        if self.kind == "full":
            return full_artifact_dir(self.model_id)
        return artifact_dir(self.model_id, self.cut)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, ``location`` omitted, ``kind`` only if not "split")."""
        data = asdict(self)
        data.pop("location")
        if data["kind"] == "split":
            data.pop("kind")
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _validate(m: Manifest) -> list[str]:
    problems = []
    if m.format_version != FORMAT_VERSION:
        problems.append(f"format_version {m.format_version} unsupported")
    if not _ID.match(m.model_id):
        problems.append(f"bad model_id {m.model_id!r}")
    if m.cut < 1:
        problems.append("cut must be >= 1")
    if len(m.input_shape) != 2 or min(m.input_shape) < 1:
        problems.append(f"input_shape must be (channels, length) > 0, got {m.input_shape}")
    if not m.activation_shape or min(m.activation_shape) < 1:
        problems.append(f"bad activation_shape {m.activation_shape}")
    if m.num_classes < 2:
        problems.append("num_classes must be >= 2")
    if m.max_batch < 1:
        problems.append("max_batch must be >= 1")
    if m.kind not in ("split", "full"):
        problems.append(f"kind must be 'split' or 'full', got {m.kind!r}")
    full = m.kind == "full"
    files = ("client_file",) if full else ("client_file", "server_file")
    for name in files:
        value = getattr(m, name)
        if not value or "/" in value or value.startswith("."):
            problems.append(f"{name} must be a plain file name, got {value!r}")
    for name in ("client_sha256",) if full else ("client_sha256", "server_sha256"):
        if not _HEX64.match(getattr(m, name)):
            problems.append(f"{name} must be 64 lower-case hex digits")
    if full:
        problems += _validate_full(m)
    channels = m.input_shape[0] if len(m.input_shape) == 2 else -1
    if len(m.norm_mean) != channels or len(m.norm_std) != channels:
        problems.append("norm_mean/norm_std need one value per input channel")
    if any(not np.isfinite(v) for v in (*m.norm_mean, *m.norm_std)):
        problems.append("normalisation constants must be finite")
    if any(s <= 0 for s in m.norm_std):
        problems.append("norm_std must be > 0")
    for name in ("client_weight_shapes",) if full else ("client_weight_shapes",
                                                        "server_weight_shapes"):
        shapes = getattr(m, name)
        if not shapes or any(not s or min(s) < 1 for s in shapes):
            problems.append(f"{name} must list positive shapes")
    if (m.input_dtype, m.activation_dtype, m.label_dtype) != ("float32", "float32", "int32"):
        problems.append("dtypes must be float32 input/activations and int32 labels")
    return problems


def _validate_full(m: Manifest) -> list[str]:
    problems = []
    if m.server_file or m.server_sha256 or m.server_weight_shapes:
        problems.append("a full-model manifest has no server file, hash or weights")
    if m.activation_shape != (m.num_classes,):
        problems.append(f"a full model outputs ({m.num_classes},), not {m.activation_shape}")
    if len(m.client_weight_shapes) != 2 * m.cut:
        problems.append(f"a full model of {m.cut} layers has {2 * m.cut} weight arrays, "
                        f"manifest lists {len(m.client_weight_shapes)}")
    return problems


def _tuple_shapes(value: Any) -> tuple[Shape, ...]:
    return tuple(tuple(int(d) for d in s) for s in value)


def manifest_from_dict(data: dict[str, Any], *, location: Path | None = None) -> Manifest:
    """Build and validate a :class:`Manifest` from parsed JSON; :class:`ModelError` on problems."""
    try:
        return Manifest(
            model_id=str(data["model_id"]),
            cut=int(data["cut"]),
            input_shape=(int(data["input_shape"][0]), int(data["input_shape"][1])),
            activation_shape=tuple(int(d) for d in data["activation_shape"]),
            num_classes=int(data["num_classes"]),
            max_batch=int(data["max_batch"]),
            client_file=str(data["client_file"]),
            server_file=str(data["server_file"]),
            client_sha256=str(data["client_sha256"]),
            server_sha256=str(data["server_sha256"]),
            norm_mean=tuple(float(v) for v in data["norm_mean"]),
            norm_std=tuple(float(v) for v in data["norm_std"]),
            norm_per_window=bool(data["norm_per_window"]),
            client_weight_shapes=_tuple_shapes(data["client_weight_shapes"]),
            server_weight_shapes=_tuple_shapes(data["server_weight_shapes"]),
            dataset=str(data["dataset"]),
            window=dict(data["window"]),
            input_dtype=str(data.get("input_dtype", "float32")),
            activation_dtype=str(data.get("activation_dtype", "float32")),
            label_dtype=str(data.get("label_dtype", "int32")),
            optimizer=dict(data.get("optimizer", {})),
            seed=int(data.get("seed", 0)),
            format_version=int(data.get("format_version", FORMAT_VERSION)),
            kind=str(data.get("kind", "split")),
            location=location,
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelError(f"invalid manifest: missing or malformed field ({exc!r})") from exc


def load_manifest(path: str | Path) -> Manifest:
    """Read ``manifest.json`` (or a directory holding one); :class:`ModelError` on problems."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read manifest {p}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ModelError(f"manifest {p} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"manifest {p} must hold a JSON object")
    return manifest_from_dict(data, location=p.parent.resolve())


def artifact_dir(model_id: str, cut: int) -> Path:
    """Packaged artifact directory ``models/artifacts/<model_id>/cut<N>``."""
    return ARTIFACTS_ROOT / model_id / f"cut{cut}"


def full_artifact_dir(model_id: str) -> Path:
    """Packaged full-model artifact directory ``models/artifacts/<model_id>/full``."""
    return ARTIFACTS_ROOT / model_id / "full"


def list_full_artifacts(root: str | Path | None = None) -> list[Manifest]:
    """Every full-model manifest (``<model>/full/``) under ``root``, sorted by id."""
    base = Path(root) if root is not None else ARTIFACTS_ROOT
    found = [load_manifest(p) for p in sorted(base.glob("*/full/manifest.json"))]
    return sorted(found, key=lambda m: m.model_id)


def list_artifacts(root: str | Path | None = None) -> list[Manifest]:
    """Every manifest under ``root`` (default: the packaged artifacts), sorted by id and cut."""
    base = Path(root) if root is not None else ARTIFACTS_ROOT
    found = [load_manifest(p) for p in sorted(base.glob("*/cut*/manifest.json"))]
    return sorted(found, key=lambda m: (m.model_id, m.cut))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def weights_sha256(ws: Sequence[np.ndarray]) -> str:
    """The canonical hash of a weight list: :func:`protocol.ledger_msgs.weights_digest`.

    One definition for the whole system (ledger records, gateway aggregates,
    model announcements, device checks): SHA-256 of the canonical CBOR array
    of the weights' wire tensors (dtype, shape, little-endian bytes).
    """
    from protocol.ledger_msgs import weights_digest

    return weights_digest([np.asarray(w) for w in ws])


def find_manifest(client_sha256: str, configured: Path | None) -> Manifest:
    """The manifest of the session's client half (configured path or the model zoo)."""
    if configured is not None:
        m = load_manifest(configured)
        if m.client_sha256 != client_sha256:
            raise ConfigError(
                f"manifest {configured} is for client {m.client_sha256[:12]}, "
                f"the session uses {client_sha256[:12]}"
            )
        return m
    for m in list_artifacts():
        if m.client_sha256 == client_sha256:
            return m
    raise ConfigError(f"no model artifact with client sha256 {client_sha256[:12]} is installed")
