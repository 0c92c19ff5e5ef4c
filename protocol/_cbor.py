"""Strict CBOR for untrusted bytes, canonical CBOR for what is signed or hashed.

Every decoder in ``protocol/`` goes through :func:`loads_strict`, which is the
boundary where third-party exceptions become :class:`MalformedMessage`:

* indefinite-length items, duplicate map keys and nesting deeper than
  ``max_depth`` are refused by ``cbor2`` itself;
* every semantic tag ``cbor2`` would otherwise interpret (dates, bignums,
  decimals, regular expressions, MIME, UUIDs, IP addresses, sets, shared and
  string references) is refused, and unknown tags are refused unless the
  caller allows tags (only the COSE_Sign1 tag 18 at the top of an envelope);
* trailing bytes after the first item are refused (one message, one item).

Encoding uses the deterministic form of RFC 8949 section 4.2.1 (``cbor2``'s
``canonical=True``: shortest integer and float forms, sorted map keys).
"""

from __future__ import annotations

import io

import cbor2

from protocol.errors import MalformedMessage

__all__ = ["MAX_DEPTH", "dumps_canonical", "loads_strict"]

MAX_DEPTH = 16

# Tags cbor2 decodes into Python objects on its own (see cbor2's decoder table).
_SEMANTIC_TAGS = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 55799,
)  # fmt: skip


def _refuse_semantic(*_args: object) -> object:
    raise ValueError("semantic tags are not allowed")


def _refuse_tag(tag: cbor2.CBORTag, _immutable: bool) -> object:
    raise ValueError(f"CBOR tag {tag.tag} is not allowed")


_SEMANTIC_DECODERS = dict.fromkeys(_SEMANTIC_TAGS, _refuse_semantic)

# What cbor2 and the C decoder raise on hostile input; all become MalformedMessage.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    cbor2.CBORError,
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    KeyError,
    IndexError,
    EOFError,
)


def loads_strict(
    data: bytes, *, what: str, allow_tags: bool = False, max_depth: int = MAX_DEPTH
) -> object:
    """Decode exactly one CBOR item from ``data`` or raise :class:`MalformedMessage`.

    With ``allow_tags`` unknown tags come back as :class:`cbor2.CBORTag` (the
    caller checks which); otherwise any tag is refused.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise MalformedMessage(f"{what}: empty input")
    fp = io.BytesIO(raw)
    try:
        decoder = cbor2.CBORDecoder(
            fp,
            tag_hook=None if allow_tags else _refuse_tag,
            semantic_decoders=_SEMANTIC_DECODERS,
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
        obj = decoder.decode()
    except DECODE_ERRORS as exc:
        raise MalformedMessage(f"{what}: not valid CBOR ({type(exc).__name__})") from exc
    if fp.tell() != len(raw):
        raise MalformedMessage(f"{what}: {len(raw) - fp.tell()} trailing bytes after the CBOR item")
    return obj


def dumps_canonical(obj: object) -> bytes:
    """Deterministic CBOR (RFC 8949 section 4.2.1) of ``obj``."""
    try:
        return cbor2.dumps(obj, canonical=True)
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError) as exc:
        raise MalformedMessage(f"cannot encode as CBOR: {exc}") from exc
