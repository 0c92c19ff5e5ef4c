"""Contracts: deterministic state transitions, one function per tx kind.

Theory of operation: the executor hands each decoded tx and an
:class:`~ledger_node.state.Overlay` to :func:`apply_tx`. The function checks
authorisation (the tx's public key must be the key the state binds to the
submitter identity, and that identity must be allowed this kind of tx), checks
the body, and writes. Any failure raises :class:`ContractRejectError` with a reason;
the executor then discards the overlay, so an invalid tx leaves the state
unchanged but stays in the block, marked invalid with the reason. Nothing here
reads clocks, files or randomness: every node computes the same result.

Identities: ``<org>/admin``, ``<org>/gateway``, ``<org>/validator``,
``server``; state key ``id/<identity>`` holds the bound public key.
Authorisation rules:

* ``org_add``, ``validator_set``: governed; applied once admins of a
  quorum (:func:`protocol.ledger.block.quorum`) of validator orgs submitted the
  identical body.
* ``device_register`` / ``device_revoke``: only the admin of the device's org;
  registration carries the device-signed request (proof of possession).
* ``session_create``, ``model_propose``: the server or an org admin. Versions
  of a session's proposals strictly increase; a new proposal *supersedes* the
  session's previous proposal if that one is not finalised (recorded as
  ``superseded_by`` on it). A superseded proposal takes no more votes and can
  never be finalised. This is how a proposer abandons a proposal it cannot
  complete (a restarted server that lost the candidate, a proposal whose
  deadline passed without a decision): it simply proposes the next version.
* ``round_record``: the gateway of the org recorded.
* ``model_vote``: only ``<org>/validator`` of a validator org; one vote each,
  on a proposal that is neither finalised nor superseded.
* ``model_finalise``: anyone known; valid once accepting votes reach the
  session's vote quorum, the proposal is not superseded, and the hashes in the
  body equal the proposal's.
* ``evidence``: anyone known; two valid signatures by one validator over two
  different headers at one height.
* ``audit_report``: an org admin (the auditor) records the sha256 of a signed
  privacy-audit report (``splitfed audit``) about a registered device of an
  existing session; the report must be signed by the submitting key
  (``auditor_pubkey`` equals the tx key), each report is recorded once.
* every tx: ``(public key, nonce)`` used at most once (replay).
"""

from __future__ import annotations

import math
from typing import Any

from ledger_node.errors import LedgerError
from ledger_node.state import Overlay
from protocol.ledger.block import decode_header, quorum, verify_header_signature
from protocol.ledger.codec import dumps, sha256_hex
from protocol.ledger.registration import verify_registration_request
from protocol.ledger.tx import Tx

__all__ = ["ContractRejectError", "apply_tx"]


class ContractRejectError(LedgerError):
    """The tx is included but marked invalid; ``str(exc)`` is the reason."""


def _need(cond: bool, reason: str) -> None:
    if not cond:
        raise ContractRejectError(reason)


def _id_ok(v: object) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 64 and not any(c in v for c in "/+#")


def _hex32(v: object) -> bool:
    if not isinstance(v, str) or len(v) != 64:
        return False
    try:
        bytes.fromhex(v)
    except ValueError:
        return False
    return True


def _num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _num_at_least(v: Any, lo: float) -> bool:
    return _num(v) and v >= lo


def _validators(st: Overlay) -> dict[str, str]:
    v = st.get("validators")
    return dict(v) if v else {}


def _org_of(submitter: str, role: str) -> str:
    org, _, r = submitter.partition("/")
    _need(r == role, f"submitter {submitter!r} is not an org {role}")
    return org


def _governed(st: Overlay, tx: Tx, apply: Any) -> None:
    org = _org_of(tx.submitter, "admin")
    vals = _validators(st)
    _need(org in vals, f"org {org!r} is not a validator org and cannot govern membership")
    key = "gov/" + sha256_hex(dumps([tx.kind, dict(tx.body)]))
    rec = st.get(key) or {"kind": tx.kind, "approvals": [], "applied": False}
    _need(not rec["applied"], "this membership change was already applied")
    _need(org not in rec["approvals"], f"org {org!r} already approved this change")
    rec["approvals"] = sorted([*rec["approvals"], org])
    if len(rec["approvals"]) >= quorum(len(vals)):
        apply()
        rec["applied"] = True
    st.put(key, rec)


def _org_add(st: Overlay, tx: Tx, height: int) -> None:
    b = tx.body
    org = b.get("org")
    _need(_id_ok(org), "org_add needs a valid org id")
    _need(st.get(f"org/{org}") is None, f"org {org!r} already exists")
    for role in ("admin", "validator", "gateway"):
        _need((b.get(role) is None and role != "admin") or _hex32(b.get(role)),
              f"org_add {role} must be a hex public key")

    def apply() -> None:
        st.put(f"org/{org}", {"admin": b["admin"], "validator": b.get("validator"),
                              "gateway": b.get("gateway"), "added_height": height})
        for role in ("admin", "validator", "gateway"):
            if b.get(role):
                st.put(f"id/{org}/{role}", b[role])
        if b.get("validator"):
            st.put("validators", {**_validators(st), str(org): b["validator"]})

    _governed(st, tx, apply)


def _validator_set(st: Overlay, tx: Tx, height: int) -> None:
    b = tx.body
    org = b.get("org")
    rec = st.get(f"org/{org}")
    _need(rec is not None, f"org {org!r} does not exist")
    vkey = b.get("validator")
    _need(vkey is None or _hex32(vkey), "validator must be a hex public key or null")

    def apply() -> None:
        vals = _validators(st)
        if vkey is None:
            vals.pop(str(org), None)
            _need(bool(vals), "cannot remove the last validator")
            st.put(f"id/{org}/validator", None)
        else:
            vals[str(org)] = vkey
            st.put(f"id/{org}/validator", vkey)
        st.put("validators", vals)
        st.put(f"org/{org}", {**rec, "validator": vkey})

    _governed(st, tx, apply)


def _device_register(st: Overlay, tx: Tx, height: int) -> None:
    org = _org_of(tx.submitter, "admin")
    req_bytes = tx.body.get("request")
    if not isinstance(req_bytes, bytes):
        raise ContractRejectError("device_register body needs field 'request': the bytes of "
                                  "the device-signed registration request")
    try:
        req = verify_registration_request(req_bytes)
    except LedgerError as exc:
        raise ContractRejectError(f"registration request rejected: {exc}") from exc
    _need(req.org == org, f"admin of {org!r} cannot register a device of org {req.org!r}")
    key = f"device/{org}/{req.device}"
    _need(st.get(key) is None, f"device {org}/{req.device} is already registered")
    st.put(key, {"pubkey_hex": req.pubkey_hex, "registered_height": height, "revoked": False,
                 "revoked_height": None, "capabilities": dict(req.capabilities)})


def _device_revoke(st: Overlay, tx: Tx, height: int) -> None:
    org = _org_of(tx.submitter, "admin")
    _need(tx.body.get("org", org) == org, f"admin of {org!r} cannot revoke another org's device")
    device = tx.body.get("device")
    key = f"device/{org}/{device}"
    rec = st.get(key)
    _need(rec is not None, f"device {org}/{device} is not registered")
    _need(not rec["revoked"], f"device {org}/{device} is already revoked")
    st.put(key, {**rec, "revoked": True, "revoked_height": height,
                 "revoked_reason": str(tx.body.get("reason", ""))[:200]})


def _server_or_admin(tx: Tx) -> None:
    _need(tx.submitter == "server" or tx.submitter.endswith("/admin"),
          f"{tx.kind} must come from the server or an org admin")


def _session_create(st: Overlay, tx: Tx, height: int) -> None:
    _server_or_admin(tx)
    b = tx.body
    sid = b.get("session_id")
    _need(_id_ok(sid), "session_create needs a valid session_id")
    _need(st.get(f"session/{sid}") is None, f"session {sid!r} already exists")
    dp = b.get("dp")
    if not isinstance(dp, dict):
        raise ContractRejectError("session_create needs a dp policy map")
    for name in ("min_noise_multiplier", "clip", "max_epsilon", "delta"):
        _need(_num(dp.get(name)), f"dp.{name} must be a finite number")
    _need(dp["min_noise_multiplier"] >= 0 and dp["clip"] > 0 and dp["max_epsilon"] > 0
          and 0 < dp["delta"] < 1, "dp policy out of range (clip>0, max_epsilon>0, 0<delta<1)")
    _need(isinstance(b.get("rounds"), int) and b["rounds"] > 0, "rounds must be a positive int")
    groups = b.get("groups", {})
    _need(isinstance(groups, dict) and all(isinstance(v, list) for v in groups.values()),
          "groups must map group id -> list of orgs")
    for name in ("client_sha256", "server_sha256"):
        _need(_hex32(b.get(name)), f"{name} must be a hex SHA-256")
    _need(isinstance(b.get("extra", {}), dict), "extra must be a map")
    nvals = len(_validators(st))
    vq = b.get("vote_quorum", quorum(nvals))
    _need(isinstance(vq, int) and 1 <= vq <= nvals, f"vote_quorum must be in [1, {nvals}]")
    st.put(f"session/{sid}", {
        "session_id": sid, "model_id": str(b.get("model_id", "")),
        "client_sha256": b["client_sha256"], "server_sha256": b["server_sha256"],
        "dp": {k: dp[k] for k in ("min_noise_multiplier", "clip", "max_epsilon", "delta")},
        "rounds": b["rounds"], "groups": groups, "sfl_mode": str(b.get("sfl_mode", "v1")),
        "vote_quorum": vq, "extra": dict(b.get("extra", {})), "created_height": height,
        "creator": tx.submitter,
    })


def _session(st: Overlay, sid: object) -> dict[str, Any]:
    s = st.get(f"session/{sid}")
    _need(s is not None, f"session {sid!r} does not exist")
    return dict(s)


def _round_record(st: Overlay, tx: Tx, height: int) -> None:
    org = _org_of(tx.submitter, "gateway")
    b = tx.body
    s = _session(st, b.get("session_id"))
    sid, rnd, group = s["session_id"], b.get("round"), b.get("group", "")
    _need(isinstance(rnd, int) and 0 <= rnd < s["rounds"], "round outside the session's rounds")
    _need(_hex32(b.get("envelopes_root")), "envelopes_root must be a hex SHA-256")
    key = f"round/{sid}/{rnd}/{org}/{group}"
    _need(st.get(key) is None, f"round {rnd} of {sid} already recorded for {org}/{group}")
    _need(isinstance(b.get("envelope_count", 0), int), "envelope_count must be an int")
    devices = b.get("devices", {})
    _need(isinstance(devices, dict), "devices must map device id -> {samples, epsilon}")
    max_eps = s["dp"]["max_epsilon"]
    # an explicitly non-private session records no epsilon (it is infinite), never a number
    non_private = s.get("extra", {}).get("privacy_mode") == "none"
    spends = {}
    for dev, rec in sorted(devices.items()):
        d = st.get(f"device/{org}/{dev}")
        _need(d is not None and not d["revoked"], f"device {org}/{dev} not registered or revoked")
        if non_private:
            _need(isinstance(rec, dict) and isinstance(rec.get("samples"), int)
                  and rec["samples"] >= 0 and rec.get("epsilon") is None,
                  f"device {dev}: samples must be int >= 0 and epsilon null (non-private "
                  "session: epsilon is infinite)")
            continue
        _need(isinstance(rec, dict) and isinstance(rec.get("samples"), int)
              and rec["samples"] >= 0 and _num(rec.get("epsilon")) and rec["epsilon"] >= 0,
              f"device {dev}: samples must be int >= 0 and epsilon a number >= 0")
        total = (st.get(f"spend/{sid}/{org}/{dev}") or 0.0) + float(rec["epsilon"])
        _need(total <= max_eps * (1 + 1e-9),
              f"device {org}/{dev} epsilon {total:.6g} would exceed max_epsilon {max_eps}")
        spends[dev] = total
    for dev, total in spends.items():
        st.put(f"spend/{sid}/{org}/{dev}", total)
    st.put(key, {"envelopes_root": b["envelopes_root"],
                 "envelope_count": int(b.get("envelope_count", 0)), "devices": devices,
                 "aggregate_sha256": b.get("aggregate_sha256"), "height": height,
                 "txid": tx.txid})


def _model_propose(st: Overlay, tx: Tx, height: int) -> None:
    _server_or_admin(tx)
    b = tx.body
    s = _session(st, b.get("session_id"))
    sid, ver = s["session_id"], b.get("version")
    _need(isinstance(ver, int) and ver > 0, "version must be a positive int")
    latest = st.get(f"model/{sid}")
    _need(latest is None or ver > latest["version"], "version is not newer than the finalised one")
    _need(st.get(f"proposal/{sid}/{ver}") is None, f"version {ver} already proposed")
    head = st.get(f"proposal_head/{sid}")
    _need(head is None or ver > head, f"version {ver} is not above the last proposal ({head})")
    for name in ("weights_sha256", "client_sha256", "server_sha256"):
        _need(_hex32(b.get(name)), f"{name} must be a hex SHA-256")
    _need(isinstance(b.get("metrics", {}), dict), "metrics must be a map")
    rnd = b.get("round")
    _need(rnd is None or (isinstance(rnd, int) and rnd >= 0), "round must be an int >= 0")
    if head is not None:  # the previous proposal, if still open, is superseded by this one
        prev = st.get(f"proposal/{sid}/{head}")
        if prev is not None and not prev["finalised"] and prev.get("superseded_by") is None:
            st.put(f"proposal/{sid}/{head}",
                   {**prev, "superseded_by": ver, "superseded_height": height})
    st.put(f"proposal_head/{sid}", ver)
    st.put(f"proposal/{sid}/{ver}", {
        "session_id": sid, "version": ver, "weights_sha256": b["weights_sha256"],
        "client_sha256": b["client_sha256"], "server_sha256": b["server_sha256"],
        "metrics": dict(b.get("metrics", {})), "proposer": tx.submitter, "height": height,
        "round": rnd, "votes": {}, "finalised": False, "superseded_by": None})


def _open_proposal(st: Overlay, key: str) -> dict[str, Any]:
    p = st.get(key)
    _need(p is not None, "no such proposal")
    _need(not p["finalised"], "proposal already finalised")
    by = p.get("superseded_by")
    _need(by is None, f"proposal superseded by version {by}")
    return dict(p)


def _model_vote(st: Overlay, tx: Tx, height: int) -> None:
    org = _org_of(tx.submitter, "validator")
    _need(org in _validators(st), f"{org!r} is not a validator org")
    b = tx.body
    key = f"proposal/{b.get('session_id')}/{b.get('version')}"
    p = _open_proposal(st, key)
    _need(org not in p["votes"], f"validator {org!r} already voted")
    _need(isinstance(b.get("accept"), bool), "accept must be a bool")
    _need(b.get("metric") is None or _num(b.get("metric")), "metric must be a number")
    p["votes"] = {**p["votes"], org: {"accept": b["accept"], "metric": b.get("metric"),
                                      "metric_name": str(b.get("metric_name", "")),
                                      "height": height}}
    st.put(key, p)


def _model_finalise(st: Overlay, tx: Tx, height: int) -> None:
    b = tx.body
    s = _session(st, b.get("session_id"))
    sid, ver = s["session_id"], b.get("version")
    key = f"proposal/{sid}/{ver}"
    p = _open_proposal(st, key)
    latest = st.get(f"model/{sid}")
    _need(latest is None or p["version"] > latest["version"], "a newer version is finalised")
    vals = _validators(st)
    accepts = sorted(o for o, v in p["votes"].items() if v["accept"] and o in vals)
    _need(len(accepts) >= s["vote_quorum"],
          f"{len(accepts)} accepting validator votes, session requires {s['vote_quorum']}")
    # the hashes are repeated in the tx so that a light client holding only this tx and a
    # certified header learns exactly which artifacts were finalised
    for name in ("weights_sha256", "client_sha256", "server_sha256"):
        _need(b.get(name) == p[name], f"{name} missing or different from the proposal")
    p["finalised"] = True
    st.put(key, p)
    rec = {"session_id": sid, "version": p["version"], "weights_sha256": p["weights_sha256"],
           "client_sha256": p["client_sha256"], "server_sha256": p["server_sha256"],
           "accepted_by": accepts, "height": height, "txid": tx.txid}
    st.put(f"model/{sid}", rec)
    st.put(f"models/{sid}/{p['version']}", rec)


def _evidence(st: Overlay, tx: Tx, height: int) -> None:
    b = tx.body
    vid = b.get("validator")
    vals = _validators(st)
    if not isinstance(vid, str) or vid not in vals:
        raise ContractRejectError(f"{vid!r} is not a validator")
    try:
        ha, hb = decode_header(b["header_a"]), decode_header(b["header_b"])
        verify_header_signature(b["header_a"], b["sig_a"], vals[vid])
        verify_header_signature(b["header_b"], b["sig_b"], vals[vid])
    except (KeyError, TypeError, LedgerError) as exc:
        raise ContractRejectError(f"evidence does not verify: {exc}") from exc
    _need(ha.height == hb.height and ha.chain_id == hb.chain_id, "headers differ in height/chain")
    _need(b["header_a"] != b["header_b"], "the two headers are identical")
    key = f"evidence/{vid}/{ha.height}"
    _need(st.get(key) is None, f"evidence for {vid} at height {ha.height} already recorded")
    st.put(key, {"validator": vid, "height": ha.height,
                 "header_hashes": sorted([ha.hash().hex(), hb.hash().hex()]),
                 "recorded_height": height, "reporter": tx.submitter})


def _audit_report(st: Overlay, tx: Tx, height: int) -> None:
    org = _org_of(tx.submitter, "admin")
    b = tx.body
    s = _session(st, b.get("session_id"))
    dev = b.get("device")
    _need(isinstance(dev, str) and dev.count("/") == 1, "device must be '<org>/<device>'")
    d = st.get(f"device/{dev}")
    _need(d is not None, f"device {dev} is not registered")
    digest = b.get("report_sha256")
    _need(_hex32(digest), "report_sha256 must be a hex SHA-256")
    _need(b.get("auditor_pubkey") == tx.pubkey_hex,
          "auditor_pubkey must be the key that submits the report (it signed the report)")
    _need(isinstance(b.get("flagged"), bool), "flagged must be a bool")
    lb, rep, conf = b.get("epsilon_lower_bound"), b.get("reported_epsilon"), b.get("confidence")
    _need(_num_at_least(lb, 0), "epsilon_lower_bound must be a number >= 0")
    _need(rep is None or _num_at_least(rep, 0),
          "reported_epsilon must be a number >= 0 or null (non-private)")
    _need(_num_at_least(conf, 0) and 0 < float(conf or 0) < 1, "confidence must be in (0, 1)")
    key = f"audit_report/{digest}"
    _need(st.get(key) is None, f"audit report {digest} is already recorded")
    st.put(key, {"session_id": s["session_id"], "device": dev, "auditor": tx.submitter,
                 "auditor_org": org, "auditor_pubkey": tx.pubkey_hex, "flagged": b["flagged"],
                 "epsilon_lower_bound": lb, "reported_epsilon": rep, "confidence": conf,
                 "height": height, "txid": tx.txid})


_HANDLERS = {
    "org_add": _org_add, "validator_set": _validator_set, "device_register": _device_register,
    "device_revoke": _device_revoke, "session_create": _session_create,
    "round_record": _round_record, "model_propose": _model_propose, "model_vote": _model_vote,
    "model_finalise": _model_finalise, "evidence": _evidence, "audit_report": _audit_report,
}


def apply_tx(st: Overlay, tx: Tx, *, height: int, chain_id: str) -> None:
    """Authorise and apply one tx to ``st``; :class:`ContractRejectError` if invalid."""
    _need(tx.chain_id == chain_id, f"tx is for chain {tx.chain_id!r}")
    bound = st.get(f"id/{tx.submitter}")
    _need(bound is not None, f"unknown submitter {tx.submitter!r}")
    _need(bound == tx.pubkey_hex, f"key is not the one bound to {tx.submitter!r}")
    nkey = f"nonce/{tx.pubkey_hex}/{tx.nonce}"
    _need(st.get(nkey) is None, f"replayed nonce {tx.nonce} for {tx.submitter!r}")
    _HANDLERS[tx.kind](st, tx, height)
    st.put(nkey, height)

