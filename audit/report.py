"""The signed audit report: JSON + markdown + PNG, sealed with the auditor's Ed25519 key (I/O).

Layout of a report directory::

    report.json   canonical JSON (sorted keys, no NaN; infinite epsilon is the string "inf")
    report.md     the same, for people
    report.png    the plots
    report.cose   COSE_Sign1 over the exact bytes of report.json (protocol.envelope.sign,
                  content type application/vnd.splitfed.audit-report+json, kid = the key's id)

``report.json`` names the sha256 of ``report.md`` and ``report.png``, so the
one signature covers all three. Its own sha256 is what goes on the ledger in
an ``audit_report`` transaction (:func:`audit_report_tx_body`);
``splitfed-ledger verify --audit-report DIR`` checks the chain holds it and
``splitfed audit show DIR`` verifies and prints it.

The signature proves who issued the report and that it is unaltered. It does
not make the findings true: they are as good as the capture and the attacks
(docs/audit.md, "What a pass proves").
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nacl.signing

from audit.errors import AuditInputError
from protocol.envelope import check_signature, peek, sign
from protocol.errors import ProtocolError
from protocol.keys import key_id, public_key_hex

__all__ = ["CONTENT_TYPE_AUDIT_REPORT", "REPORT_FORMAT", "audit_report_tx_body", "load_report",
           "render_markdown", "write_report"]

CONTENT_TYPE_AUDIT_REPORT = "application/vnd.splitfed.audit-report+json"
REPORT_FORMAT = "splitfed-audit-report/1"
MAX_REPORT_BYTES = 4 * 1024 * 1024


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return _finite(obj.item())
    return obj


def canonical_json(obj: Any) -> bytes:
    return json.dumps(_finite(obj), sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode()


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_markdown(report: Mapping[str, Any]) -> str:
    """A human-readable rendering of a report body (before the artifact hashes)."""
    v = report["verdict"]
    note = str(v["note"])
    for prefix in ("FLAGGED: ", "not refuted: "):
        note = note.removeprefix(prefix)
    lines = [f"# Privacy audit: device {report['device']}, session {report['session_id']}", "",
             f"Auditor `{report['auditor']}` (Ed25519 {report['auditor_pubkey']}), "
             f"{report['created']}.", "",
             f"**Verdict: {'FLAGGED' if v['flagged'] else 'not refuted'}.** {note}", "",
             "| measure | value |", "|---|---|",
             f"| reported epsilon (delta {_num(v['delta'])}) | {_num(v['reported_epsilon'])} |",
             f"| empirical lower bound ({v['confidence']:.0%}) | "
             f"{_num(v['epsilon_lower_bound'])} |",
             f"| strongest bound this audit could show | {_num(v['strength'])} |"]
    for run in report.get("sessions", []):
        lines += ["", f"## Session run: mode {run['mode']}, reported epsilon "
                      f"{_num(run['reported_epsilon'])}", "", "| measure | value |", "|---|---|"]
        one = run["one_run"]
        for name, r in one["per_score"].items():
            lines.append(f"| one-run bound, {name} score ({r['correct']}/{r['guesses']} right) | "
                         f"{_num(r['epsilon_lower_bound'])} (AUC {_num(one['score_auc'][name])}) |")
        if "reconstruction" in run:
            a, b = run["reconstruction"]["attack"], run["reconstruction"]["no_dp_baseline"]
            lines += [f"| reconstruction NMSE (no-DP baseline) | {_num(a['nmse'])} "
                      f"({_num(b['nmse'])}) |",
                      f"| reconstruction DTW (no-DP; mean-window) | {_num(a['dtw'])} "
                      f"({_num(b['dtw'])}; {_num(a['dtw_mean_baseline'])}) |",
                      f"| distance correlation rows-windows (no-DP) | "
                      f"{_num(a['distance_correlation'])} ({_num(b['distance_correlation'])}) |"]
        if "labels" in run:
            lab = run["labels"]
            for key in ("auc_sent_label", "auc_posterior", "auc_gradient_direction",
                        "auc_gradient_norm_binary"):
                lines.append(f"| label inference {key[4:].replace('_', ' ')} AUC | "
                             f"{_num(lab[key])} |")
        if "membership" in run:
            mem = run["membership"]["loss_threshold"]
            lines.append(f"| membership (loss threshold) AUC / TPR at 1% FPR | "
                         f"{_num(mem['auc'])} / {_num(mem['tpr_at_1pct_fpr'])} |")
            lira = run["membership"].get("lira")
            if lira:
                lines.append(f"| membership (LiRA, {int(lira['shadows'])} shadows) AUC / TPR "
                             f"at 1% FPR | {_num(lira['auc'])} / {_num(lira['tpr_at_1pct_fpr'])} |")
    lines += ["", "A lower bound at or below the reported epsilon is consistent with the claim; "
              "it does not prove it (see docs/audit.md).", ""]
    return "\n".join(lines)


def _plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report.get("sessions", [])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    names, lbs = [], []
    for run in runs:
        for name, r in run["one_run"]["per_score"].items():
            names.append(f"{run['mode']}\n{name}")
            lbs.append(r["epsilon_lower_bound"])
    if names:
        ax.bar(range(len(names)), lbs, color="tab:red", label="empirical lower bound")
        ax.set_xticks(range(len(names)), names, fontsize=7)
    v = report["verdict"]
    rep = v["reported_epsilon"]
    if isinstance(rep, float) and math.isfinite(rep):
        ax.axhline(rep, color="black", ls="--", label=f"reported epsilon {rep:.3g}")
    ax.axhline(v["strength"], color="grey", ls=":", label=f"audit strength {v['strength']:.3g}")
    ax.set_ylabel("epsilon")
    ax.set_title("one-run audit (95%)")
    ax.legend(fontsize=7)
    ax = axes[1]
    labels, vals = [], []
    for run in runs:
        if "labels" in run:
            labels += [f"{run['mode']}\nlabel", f"{run['mode']}\nmember"]
            vals += [run["labels"]["auc_posterior"], run["membership"]["loss_threshold"]["auc"]]
    if labels:
        ax.bar(range(len(labels)), vals, color="tab:blue")
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.axhline(0.5, color="black", ls="--", label="chance")
    ax.set_ylim(0, 1)
    ax.set_ylabel("attack AUC")
    ax.set_title("label and membership inference")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out_dir: str | Path, *, session_id: str, device: str, verdict: Mapping[str, Any],
                 sessions: list[Mapping[str, Any]], plan: Mapping[str, Any] | None,
                 signing_key: nacl.signing.SigningKey, auditor: str,
                 created: str | None = None) -> str:
    """Write the four files; returns the sha256 of report.json (what the ledger records)."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {
        "format": REPORT_FORMAT, "session_id": session_id, "device": device,
        "auditor": auditor, "auditor_pubkey": public_key_hex(signing_key),
        "auditor_kid": key_id(signing_key),
        "created": created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "verdict": dict(verdict), "sessions": list(sessions),
        # the secret is revealed only now, after the run, so anyone can recheck the scoring
        "canary_plan": dict(plan) if plan is not None else None,
    }
    body = json.loads(canonical_json(body))
    md = render_markdown(body).encode()
    (d / "report.md").write_bytes(md)
    _plot(body, d / "report.png")
    body["artifacts"] = {"report.md": hashlib.sha256(md).hexdigest(),
                         "report.png": hashlib.sha256((d / "report.png").read_bytes()).hexdigest()}
    raw = canonical_json(body)
    (d / "report.json").write_bytes(raw)
    (d / "report.cose").write_bytes(sign(raw, signing_key=signing_key, kid=key_id(signing_key),
                                         content_type=CONTENT_TYPE_AUDIT_REPORT,
                                         max_size=MAX_REPORT_BYTES + 4096))
    return hashlib.sha256(raw).hexdigest()


def load_report(path: str | Path, *, verify_key: nacl.signing.VerifyKey | None = None
                ) -> tuple[dict[str, Any], str, list[str]]:
    """Read a report directory (or its report.cose): ``(body, sha256, problems)``.

    The signature is checked with ``verify_key`` if given, else with the key the
    report names (which only shows the report is self-consistent: look the key up
    on the ledger or in the partner's key list). ``problems`` lists artifact files
    that are missing or differ from their recorded hash.
    """
    p = Path(path)
    cose = p / "report.cose" if p.is_dir() else p
    try:
        blob = cose.read_bytes()
    except OSError as exc:
        raise AuditInputError(f"cannot read {cose}: {exc.strerror}") from exc
    try:
        env = peek(blob, max_size=MAX_REPORT_BYTES + 4096)
        if env.content_type != CONTENT_TYPE_AUDIT_REPORT:
            raise AuditInputError(f"{cose} is a {env.content_type}, not an audit report")
        body = json.loads(env.payload)
        if not isinstance(body, dict) or body.get("format") != REPORT_FORMAT:
            raise AuditInputError(f"{cose} does not hold a {REPORT_FORMAT} report")
        key = verify_key or nacl.signing.VerifyKey(bytes.fromhex(str(body["auditor_pubkey"])))
        check_signature(env, verify_key=key)
    except (ProtocolError, ValueError, KeyError, TypeError) as exc:
        raise AuditInputError(f"audit report {cose} does not verify: {exc}") from exc
    problems = []
    for name, digest in dict(body.get("artifacts", {})).items():
        f = cose.parent / name
        if not f.exists():
            problems.append(f"{name} missing")
        elif hashlib.sha256(f.read_bytes()).hexdigest() != digest:
            problems.append(f"{name} differs from the signed report")
    return body, hashlib.sha256(env.payload).hexdigest(), problems


def audit_report_tx_body(body: Mapping[str, Any], sha256: str) -> dict[str, Any]:
    """The ``audit_report`` ledger transaction body for a signed report."""
    v = body["verdict"]

    def eps(x: Any) -> float | None:
        return None if isinstance(x, str) else float(x)

    return {"session_id": body["session_id"], "device": body["device"], "report_sha256": sha256,
            "auditor_pubkey": body["auditor_pubkey"], "flagged": bool(v["flagged"]),
            "epsilon_lower_bound": float(v["epsilon_lower_bound"]),
            "reported_epsilon": eps(v["reported_epsilon"]), "confidence": float(v["confidence"])}
