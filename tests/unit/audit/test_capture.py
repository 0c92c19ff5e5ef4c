"""Reading a capture directory: what is kept, what is rejected and counted."""

from __future__ import annotations

import binascii
from pathlib import Path

import numpy as np
import pytest

from audit.capture import load_capture
from audit.errors import AuditInputError
from protocol.control import Endorsement
from protocol.keys import generate_signing_key
from protocol.messages import seal
from protocol.training import ActivationBatch, DpParams, GradientBatch

DP = DpParams(mode="sl-frozen", clip_norm=1.0, noise_multiplier=2.0, label_mode="plain",
              label_epsilon=None, mechanism="gaussian")


def _rows(device: str, seq: int) -> ActivationBatch:
    return ActivationBatch(session="s", round=0, step=seq, device=device, seq=seq,
                           model_hash="ab" * 32, dp=DP,
                           activations=np.full((2, 4), seq, np.float16),
                           labels=np.array([0, 1], np.int64), epsilon_spent=0.5 * seq)


def test_capture_keeps_the_device_counts_the_rest(tmp_path: Path) -> None:
    key, other, gw = generate_signing_key(), generate_signing_key(), generate_signing_key()
    d = tmp_path / "cap"
    d.mkdir()
    (d / "1.cose").write_bytes(seal(_rows("dev1", 1), signing_key=key, kid="dev1"))
    (d / "1b.cose").write_bytes(seal(_rows("dev1", 1), signing_key=key, kid="dev1"))  # QoS-1 dup
    inner = seal(_rows("dev1", 2), signing_key=key, kid="dev1")
    (d / "2.cbor").write_bytes(seal(Endorsement(org="acme", gateway="gw", seq=1, envelope=inner),
                                    signing_key=gw, kid="gw"))
    grad = GradientBatch(session="s", round=0, step=1, device="dev1", seq=1,
                         grad=np.zeros((2, 4), np.float32), loss=None)
    hexlines = [binascii.hexlify(seal(grad, signing_key=gw, kid="server")),
                b"zz-not-hex", b"",
                binascii.hexlify(seal(_rows("dev2", 1), signing_key=other, kid="dev2")),
                binascii.hexlify(seal(_rows("dev1", 3), signing_key=other, kid="dev1"))]  # forged
    (d / "sub.hex").write_bytes(b"\n".join(hexlines))
    (d / "junk.bin").write_bytes(b"\x00garbage")
    (d / "notes.txt").write_text("ignored: unknown suffix")
    cap = load_capture(d, device="dev1", verify_key=key.verify_key)
    assert [m.seq for m in cap.rows] == [1, 2]
    assert len(cap.grads) == 1
    assert cap.duplicates == 1
    assert cap.ignored == 1  # dev2
    assert cap.rejected == {"not hex": 1, "BadSignature": 1, "MalformedMessage": 1}
    assert cap.reported_epsilon == 1.0
    # without a key the forged one is kept: the capture is then only as good as its source
    assert [m.seq for m in load_capture(d, device="dev1").rows] == [1, 2, 3]


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError, match="does not exist"):
        load_capture(tmp_path / "nope", device="dev1")


def test_a_device_that_declares_no_mechanism_claims_nothing(tmp_path: Path) -> None:
    key = generate_signing_key()
    none = DpParams(mode="none", clip_norm=1.0, noise_multiplier=0.0, label_mode="plain",
                    label_epsilon=None, mechanism="none")
    msg = ActivationBatch(session="s", round=0, step=1, device="dev1", seq=1,
                          model_hash="ab" * 32, dp=none, activations=np.zeros((1, 4), np.float16),
                          labels=np.array([0], np.int64), epsilon_spent=0.0)
    (tmp_path / "1.cose").write_bytes(seal(msg, signing_key=key, kid="dev1"))
    assert load_capture(tmp_path, device="dev1").reported_epsilon == float("inf")
