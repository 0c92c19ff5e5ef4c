"""``splitfed audit``: plan canaries, score a captured session, run a simulated one, show, record.

Exit codes: 0 success (for ``score``/``run``: the audit ran, whatever it
found), 1 runtime failure, 2 usage or configuration error, 3 ``show``: an
artifact differs from the signed report, 4 ``show``: the signature does not
verify, 5 ``score``/``run`` with ``--fail-on-flag``: the device was flagged.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np

from audit.canaries import canaries_for_device, load_plan, new_plan, save_plan
from audit.errors import AuditInputError
from protocol.errors import KeyFileError, SplitfedError
from protocol.keys import load_signing_key, verify_key_from_hex

EXIT_ARTIFACT, EXIT_BAD_SIGNATURE, EXIT_FLAGGED = 3, 4, 5


class _Exit(click.ClickException):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # click reads it; one class, any code

    def show(self, file: object = None) -> None:
        click.echo(f"splitfed audit: {self.format_message()}", err=True)


def _fail(exc: SplitfedError) -> click.ClickException:
    code = 2 if isinstance(exc, AuditInputError | KeyFileError) else 1
    return _Exit(str(exc), code)


@click.group(name="audit")
def audit_group() -> None:
    """Empirical privacy audit of a device by attack (docs/audit.md)."""


@audit_group.command("canaries")
@click.option("--m", "m", type=click.IntRange(2, 1_000_000), default=256, show_default=True,
              help="number of canaries planned per device (about half go to it)")
@click.option("--model", "model_id", default="mlp_dp", show_default=True)
@click.option("--cut", type=int, default=1, show_default=True)
@click.option("--kind", type=click.Choice(["spike", "gaussian"]), default="spike",
              show_default=True)
@click.option("--device", "devices", multiple=True, required=True,
              help="a device to audit (repeat for several; each gets its own secret plan)")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="writes <device>.plan.json (SECRET, mode 0600: keep it from the device) and "
                   "<device>.canaries.npz (ids, x, y: one record per slot, canary or decoy)")
def canaries_cmd(m: int, model_id: str, cut: int, kind: str, devices: tuple[str, ...],
                 out_dir: Path) -> None:
    """Plan M canary slots per chosen device; write each secret plan and the device's records."""
    from audit.harness import find_manifest
    from protocol.errors import TopicError
    from protocol.topics import validate_id

    try:
        for d in devices:
            validate_id(d, what="device")
        man = find_manifest(model_id, cut)
    except (LookupError, TopicError) as exc:
        raise _Exit(str(exc), 2) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    for device in dict.fromkeys(devices):
        try:
            plan = new_plan(m=m, shape=man.input_shape, num_classes=man.num_classes,
                            kind=kind)  # type: ignore[arg-type]
        except AuditInputError as exc:
            raise _Exit(str(exc), 2) from exc
        save_plan(plan, out_dir / f"{device}.plan.json")
        chosen = canaries_for_device(plan)
        np.savez(out_dir / f"{device}.canaries.npz",
                 ids=np.array([c[0] for c in chosen], np.int64),
                 x=np.stack([c[1] for c in chosen]),
                 y=np.array([c[2] for c in chosen], np.int64))
        click.echo(f"{device}: planned {m} {kind} canary slots for {model_id} cut {cut} "
                   f"({int(plan.included.sum())} canaries, the rest decoys) -> "
                   f"{out_dir / (device + '.canaries.npz')}")


def _load_key(path: Path) -> Any:
    try:
        return load_signing_key(path)
    except KeyFileError as exc:
        raise _Exit(str(exc), 2) from exc


def _load_weights(path: Path) -> list[np.ndarray]:
    """Arrays of an .npz in manifest order (``np.savez`` names ``arr_0, arr_1, ...``)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if all(n.startswith("arr_") and n[4:].isdigit() for n in names):
                names.sort(key=lambda n: int(n[4:]))
            else:
                names.sort()
            return [np.asarray(z[n]) for n in names]
    except (OSError, ValueError) as exc:
        raise AuditInputError(f"cannot read weights {path}: {exc}") from exc


def _verdict(one_run: dict[str, Any]) -> dict[str, Any]:
    return {k: one_run[k] for k in ("reported_epsilon", "delta", "confidence",
                                    "epsilon_lower_bound", "flagged", "strength", "note",
                                    "best_score")}


@audit_group.command("score")
@click.option("--plan", "plan_file", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--capture", "capture_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="directory of captured envelopes (.cose/.cbor/.bin or .hex)")
@click.option("--device", required=True, help="device id as in its messages")
@click.option("--org", required=True, help="the device's org (the report names org/device)")
@click.option("--pubkey", metavar="HEX", help="the device's Ed25519 key (from the ledger)")
@click.option("--session-id", required=True)
@click.option("--model", "model_id", default="mlp_dp", show_default=True)
@click.option("--cut", type=int, default=1, show_default=True)
@click.option("--server-weights", type=click.Path(exists=True, path_type=Path),
              help=".npz of the finalised server half (arrays in manifest order) for the "
                   "loss score")
@click.option("--delta", type=float, default=1e-5, show_default=True)
@click.option("--reported-epsilon", type=float,
              help="the device's claim (default: the larger of the largest epsilon_spent it "
                   "declared and, with --ledger-url, the spend its gateway recorded)")
@click.option("--ledger-url", help="ledger API: read the device's recorded spend for the "
                                   "session and put it in the report")
@click.option("--key", "key_file", type=click.Path(path_type=Path), required=True,
              help="the auditor's signing key")
@click.option("--auditor", required=True, help="auditor identity, e.g. org2/admin")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--fail-on-flag", is_flag=True, help="exit 5 if the device is flagged")
def score_cmd(plan_file: Path, capture_dir: Path, device: str, org: str, pubkey: str | None,
              session_id: str, model_id: str, cut: int, server_weights: Path | None,
              delta: float, reported_epsilon: float | None, ledger_url: str | None,
              key_file: Path, auditor: str, out: Path, fail_on_flag: bool) -> None:
    """Score the canaries from a real capture; write the signed report."""
    from audit.capture import load_capture
    from audit.harness import find_manifest
    from audit.one_run import audit_capture
    from audit.report import write_report
    from models.runtime import ClientRuntime, ServerRuntime

    key = _load_key(key_file)
    try:
        vk = verify_key_from_hex(pubkey) if pubkey else None
        plan = load_plan(plan_file)
        man = find_manifest(model_id, cut)
        cap = load_capture(capture_dir, device=device, verify_key=vk)
        ledger_eps = None
        if ledger_url is not None:
            from service.ledger_client import LedgerClient
            ledger_eps = LedgerClient(ledger_url).device_spend(session_id, f"{org}/{device}")
        if reported_epsilon is None:
            reported_epsilon = max(cap.reported_epsilon, ledger_eps or 0.0)
        client = ClientRuntime.from_manifest(man)
        server = None
        if server_weights is not None:
            server = ServerRuntime.from_manifest(man)
            server.set_weights(_load_weights(server_weights))
        res = audit_capture(plan, cap, client=client, delta=delta, final_server=server,
                            reported_epsilon=reported_epsilon)
    except LookupError as exc:
        raise _Exit(str(exc), 2) from exc
    except SplitfedError as exc:
        raise _fail(exc) from exc
    one = res.as_dict()
    run = {"mode": "captured", "reported_epsilon": res.reported_epsilon, "one_run": one,
           "declared_epsilon": cap.reported_epsilon, "ledger_epsilon": ledger_eps,
           "capture": {"activation_batches": len(cap.rows), "gradient_batches": len(cap.grads),
                       "client_weights": len(cap.weights), "rejected": dict(cap.rejected),
                       "duplicates": cap.duplicates, "verified": vk is not None}}
    digest = write_report(out, session_id=session_id, device=f"{org}/{device}",
                          verdict=_verdict(one), sessions=[run], plan=plan.to_json(),
                          signing_key=key, auditor=auditor)
    click.echo(f"{res.note()}\nreport {out} sha256 {digest}")
    if fail_on_flag and res.flagged:
        raise _Exit("device flagged", EXIT_FLAGGED)


@audit_group.command("run")
@click.option("--mode", type=click.Choice(["sl-frozen", "sl-dpsgd", "none"]), required=True)
@click.option("--epsilon", type=float, default=8.0, show_default=True,
              help="planned per-record epsilon (ignored for mode none)")
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--records", type=int, default=200, show_default=True)
@click.option("--m", "m", type=int, default=256, show_default=True)
@click.option("--label-epsilon", type=float, help="randomized-response labels (default: public)")
@click.option("--lira-shadows", type=click.IntRange(0, 64), default=0, show_default=True,
              help="shadow sessions for LiRA membership inference (0: loss threshold only)")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--key", "key_file", type=click.Path(path_type=Path), required=True)
@click.option("--auditor", required=True)
@click.option("--session-id", default="simulated", show_default=True,
              help="session the report names (a ledger session, to record it)")
@click.option("--device", default="sim/dev1", show_default=True,
              help="org/device the report names (a registered device, to record it)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--fail-on-flag", is_flag=True, help="exit 5 if the device is flagged")
def run_cmd(mode: str, epsilon: float, epochs: int, records: int, m: int,
            label_epsilon: float | None, lira_shadows: int, data_dir: Path | None,
            key_file: Path, auditor: str,
            session_id: str, device: str, out: Path, fail_on_flag: bool) -> None:
    """Simulate one device (the agent's own code, PLAID) and audit it with every attack."""
    from audit.harness import find_manifest
    from audit.report import write_report
    from audit.session import SessionSpec, audit_session, privacy_for
    from models.data import default_window, load_windows

    key = _load_key(key_file)
    eps = float("inf") if mode == "none" else epsilon
    try:
        man = find_manifest("mlp_dp", 1)
        w = load_windows(default_window("PLAID"), data_dir=data_dir)
        plan = new_plan(m=m, shape=man.input_shape, num_classes=man.num_classes)
        spec = SessionSpec(privacy=privacy_for(mode, eps, epochs=epochs,
                                               label_epsilon=label_epsilon),
                           n_records=records, epochs=epochs, lira_shadows=lira_shadows)
        with tempfile.TemporaryDirectory() as tmp:
            result = audit_session(w, man, plan, spec, Path(tmp))
    except SplitfedError as exc:
        raise _fail(exc) from exc
    one = result["one_run"]
    digest = write_report(out, session_id=session_id, device=device, verdict=_verdict(one),
                          sessions=[result], plan=plan.to_json(), signing_key=key,
                          auditor=auditor)
    click.echo(f"{one['note']}\nreport {out} sha256 {digest}")
    if fail_on_flag and one["flagged"]:
        raise _Exit("device flagged", EXIT_FLAGGED)


@audit_group.command("show")
@click.argument("report", type=click.Path(exists=True, path_type=Path))
@click.option("--pubkey", metavar="HEX",
              help="the auditor's key (default: the key the report names, which only shows "
                   "it is self-consistent)")
@click.option("--json", "as_json", is_flag=True, help="print the JSON body instead")
def show_cmd(report: Path, pubkey: str | None, as_json: bool) -> None:
    """Verify a signed report and print it (exit 4: bad signature, 3: artifact altered)."""
    from audit.report import load_report, render_markdown

    try:
        vk = verify_key_from_hex(pubkey) if pubkey else None
    except KeyFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--pubkey") from exc
    try:
        body, digest, problems = load_report(report, verify_key=vk)
    except AuditInputError as exc:
        raise _Exit(str(exc), EXIT_BAD_SIGNATURE) from exc
    if as_json:
        click.echo(json.dumps(body, indent=2, sort_keys=True))
    else:
        click.echo(render_markdown(body))
    who = "the given key" if vk is not None else "the key it names (not checked against the ledger)"
    click.echo(f"signature OK ({who}); report.json sha256 {digest}")
    if problems:
        raise _Exit("; ".join(problems), EXIT_ARTIFACT)


@audit_group.command("record")
@click.argument("report", type=click.Path(exists=True, path_type=Path))
@click.option("--url", default="http://127.0.0.1:7070", show_default=True)
@click.option("--key", "key_file", type=click.Path(path_type=Path), required=True,
              help="the key that signed the report (the auditor org's admin key)")
@click.option("--submitter", required=True, help="e.g. org2/admin")
@click.option("--chain-id", required=True)
@click.option("--wait", "wait_s", type=float, default=10.0, show_default=True)
def record_cmd(report: Path, url: str, key_file: Path, submitter: str, chain_id: str,
               wait_s: float) -> None:
    """Record a report's sha256 on the ledger (an audit_report tx)."""
    from audit.report import audit_report_tx_body, load_report
    from protocol.ledger.tx import make_tx
    from service.ledger_client import LedgerClient

    key = _load_key(key_file)
    try:
        body, digest, problems = load_report(report, verify_key=key.verify_key)
        if problems:
            raise AuditInputError(problems)
        tx = make_tx("audit_report", audit_report_tx_body(body, digest), signing_key=key,
                     submitter=submitter, chain_id=chain_id)
        r = LedgerClient(url).submit_and_wait(tx, timeout=wait_s)
    except SplitfedError as exc:
        raise _fail(exc) from exc
    if not r.valid:
        raise _Exit(f"audit_report tx marked invalid: {r.reason}", 3)
    click.echo(f"recorded report {digest} at height {r.height}")


@audit_group.command("capture")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=1883, show_default=True)
@click.option("--topic", required=True, help="e.g. 'splitfed/v1/acme/#'")
@click.option("--username")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ca-certs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA bundle for a TLS listener")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="hex file to append to (one envelope per line); put it in the capture dir")
@click.option("--duration", type=float, required=True, help="seconds to record")
def capture_cmd(host: str, port: int, topic: str, username: str | None,
                password_file: Path | None, ca_certs: Path | None, out: Path,
                duration: float) -> None:
    """Record a session's MQTT traffic for `score` (like mosquitto_sub -F %x)."""
    import time

    from audit.recorder import CaptureRecorder

    password = password_file.read_text().rstrip("\r\n") if password_file else None
    try:
        rec = CaptureRecorder(host=host, port=port, topic=topic, out=out, username=username,
                              password=password,
                              ca_certs=None if ca_certs is None else str(ca_certs))
    except SplitfedError as exc:
        raise _fail(exc) from exc
    try:
        rec.wait_subscribed(15.0)
        click.echo(f"recording {topic} into {out} for {duration:g} s", err=True)
        time.sleep(max(0.0, duration))
    except SplitfedError as exc:
        raise _fail(exc) from exc
    except KeyboardInterrupt:
        pass
    finally:
        rec.close()
    click.echo(f"recorded {rec.messages} messages ({rec.bytes} bytes) into {out}")
