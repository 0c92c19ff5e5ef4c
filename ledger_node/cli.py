"""``splitfed-ledger``: permissioned ledger full node (command line).

Exit codes: 0 success; 1 runtime failure (node unreachable, ``verify`` found
a bad block or, with ``--require-certified``, an uncertified head; a proof
does not verify); 2 usage or configuration error; 3 the submitted tx was
committed but marked invalid (reason printed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from ledger_node.api import jsonable
from ledger_node.errors import LedgerError
from ledger_node.node import LedgerNode
from ledger_node.verify import verify_chain
from protocol.errors import ConfigError, KeyFileError, SplitfedError
from protocol.keys import load_signing_key
from protocol.ledger.genesis import load_genesis, write_genesis_with_keys
from protocol.ledger.lightclient import verify_proof
from protocol.ledger.tx import TX_KINDS, make_tx
from service.cli import EXIT_FAILURE, EXIT_USAGE, run_click
from service.ledger_client import LedgerClient

EXIT_TX_INVALID = 3  # `splitfed-ledger tx`: the tx was included but marked invalid
DEFAULT_URL = "http://127.0.0.1:7070"

url_option = click.option("--url", default=DEFAULT_URL, show_default=True,
                          help="API of a running node")


def _print(obj: Any) -> None:
    click.echo(json.dumps(jsonable(obj), indent=2, sort_keys=True))


class _ExitCodeError(SystemExit):
    """Leave a command with a specific exit code (run_click returns it)."""


@click.group(name="splitfed-ledger", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="log at INFO level to stderr")
def cli(verbose: bool) -> None:
    """iiot-splitfed permissioned ledger full node."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--orgs", default="org1,org2,org3", show_default=True)
@click.option("--chain-id", default="splitfed", show_default=True)
@click.option("--ordering", type=click.Choice(["solo", "etcd"]), default="solo")
@click.option("--block-max-txs", type=int, default=100, show_default=True)
@click.option("--block-max-ms", type=int, default=200, show_default=True)
def genesis(out_dir: Path, orgs: str, chain_id: str, ordering: str, block_max_txs: int,
            block_max_ms: int) -> None:
    """Write OUT/genesis.json and fresh keys (OUT/keys/) for N organisations."""
    g = write_genesis_with_keys(out_dir, chain_id=chain_id,
                                org_ids=[o.strip() for o in orgs.split(",") if o.strip()],
                                ordering=ordering, block_max_txs=block_max_txs,
                                block_max_ms=block_max_ms)
    click.echo(f"wrote {out_dir / 'genesis.json'} for {len(g.orgs)} orgs; keys in "
               f"{out_dir / 'keys'}")


@cli.command()
@click.option("--genesis", "genesis_file", type=click.Path(path_type=Path), required=True)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
def init(genesis_file: Path, data_dir: Path) -> None:
    """Create a node database at block 0 from a genesis file."""
    g = load_genesis(genesis_file)
    LedgerNode.init(data_dir, g)
    click.echo(f"initialised chain {g.chain_id} in {data_dir} (genesis {g.digest().hex()})")


@cli.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path), required=True)
def run(config_file: Path) -> None:
    """Run a full node until SIGTERM/SIGINT."""
    from ledger_node.app import LedgerApp
    from ledger_node.config import load_config

    LedgerApp(load_config(config_file)).run_forever()


# Body fields make-tx checks before signing (the contracts check the rest), with an example.
_BODY_FIELDS: dict[str, tuple[tuple[str, type, str], ...]] = {
    "device_register": (("request", bytes,
                         '{"request": {"@file": "press-07.req"}} (the file written by '
                         "`splitfed-agent provision`, path relative to the body file)"),),
    "device_revoke": (("device", str, '{"device": "press-07", "reason": "replaced"}'),),
}

_MAKE_TX_HELP = """Build and sign a tx into a file (for `submit`).

\b
Register a device (as its org's admin), from the request the board wrote:
  echo '{"request": {"@file": "press-07.req"}}' > register.json
  splitfed-ledger make-tx --kind device_register --body register.json \\
      --key consortium/keys/acme-admin.key --submitter acme/admin \\
      --chain-id plant --out press-07.tx
  splitfed-ledger submit press-07.tx --url http://127.0.0.1:7070
"""


def _check_body(kind: str, body: dict[str, Any]) -> None:
    problems = []
    for name, typ, example in _BODY_FIELDS.get(kind, ()):
        if name not in body:
            problems.append(f"{kind} body needs field {name!r}, e.g. {example}")
        elif not isinstance(body[name], typ):
            what = "bytes ({'@file': PATH})" if typ is bytes else typ.__name__
            problems.append(f"{kind} body field {name!r} must be {what}, e.g. {example}")
    if problems:
        raise ConfigError(problems)


@cli.command("make-tx", help=_MAKE_TX_HELP)
@click.option("--kind", type=click.Choice(sorted(TX_KINDS)), required=True)
@click.option("--body", "body_file", type=click.Path(path_type=Path), required=True,
              help="JSON object; a value {'@file': PATH} is replaced by that file's bytes "
                   "(PATH relative to the body file); device_register: "
                   '{"request": {"@file": "press-07.req"}}')
@click.option("--key", "key_file", type=click.Path(path_type=Path), required=True)
@click.option("--submitter", required=True, help="e.g. org1/admin, org1/gateway, server")
@click.option("--chain-id", required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def make_tx_cmd(kind: str, body_file: Path, key_file: Path, submitter: str, chain_id: str,
                out: Path) -> None:
    try:
        body = json.loads(body_file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read body {body_file}: {exc}") from exc
    if not isinstance(body, dict):
        raise ConfigError("the tx body must be a JSON object")
    for k, v in list(body.items()):
        if isinstance(v, dict) and set(v) == {"@file"}:
            path = body_file.parent / str(v["@file"])
            try:
                body[k] = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"body field {k!r}: cannot read {path}: {exc.strerror}") from exc
    _check_body(kind, body)
    raw = make_tx(kind, body, signing_key=load_signing_key(key_file), submitter=submitter,
                  chain_id=chain_id)
    out.write_bytes(raw)
    click.echo(f"wrote {out}")


@cli.command()
@click.argument("tx_file", type=click.Path(path_type=Path))
@url_option
@click.option("--wait", "wait_s", type=float, default=10.0, show_default=True,
              help="seconds to wait for the block; 0 = do not wait")
def submit(tx_file: Path, url: str, wait_s: float) -> None:
    """Submit a signed tx file; print txid (and its receipt)."""
    client = LedgerClient(url)
    txid = client.submit(tx_file.read_bytes())
    click.echo(txid)
    if wait_s > 0:
        r = client.wait_for(txid, timeout=wait_s)
        click.echo(f"height {r.height}: {'valid' if r.valid else 'INVALID: ' + str(r.reason)}")
        if not r.valid:
            raise _ExitCodeError(EXIT_TX_INVALID)


@cli.command()
@click.argument("height", type=int, required=False)
@url_option
def show(height: int | None, url: str) -> None:
    """Print a block (default: the latest)."""
    client = LedgerClient(url)
    _print(client.block(client.height() if height is None else height))


@cli.command()
@click.argument("key")
@url_option
def state(key: str, url: str) -> None:
    """Print a state value, e.g. device/org1/pump1, session/s1, model/s1."""
    value = LedgerClient(url).state(key)
    if value is None:
        click.echo(f"no state key {key!r}", err=True)
        raise _ExitCodeError(EXIT_FAILURE)
    _print(value)


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--require-certified", is_flag=True,
              help="also fail (exit 1) if the head block lacks a quorum certificate")
@click.option("--audit-report", "audit_reports", multiple=True,
              type=click.Path(path_type=Path),
              help="a privacy-audit report (its directory or report.json): fail (exit 1) "
                   "unless the verified chain records its sha256 in an audit_report tx")
def verify(data_dir: Path, require_certified: bool, audit_reports: tuple[Path, ...]) -> None:
    """Replay the whole chain from genesis; non-zero exit names the first bad block.

    Without --require-certified, trailing blocks that lack a quorum of
    validator signatures are reported ("not yet certified") but pass: a live
    node's newest block is often still collecting signatures. An audit of a
    stopped node (or of a copied database) should pass the flag, since
    deleting the head's signatures is otherwise invisible to the exit code.
    """
    digests: dict[str, Path] = {}
    for path in audit_reports:
        f = path / "report.json" if path.is_dir() else path
        try:
            digests[f"audit_report/{hashlib.sha256(f.read_bytes()).hexdigest()}"] = f
        except OSError as exc:
            raise ConfigError(f"cannot read audit report {f}: {exc.strerror}") from exc
    try:
        rep = verify_chain(data_dir, state_keys=tuple(digests))
    except LedgerError as exc:
        click.echo(f"verify FAILED: {exc}", err=True)
        raise _ExitCodeError(EXIT_FAILURE) from exc
    click.echo(f"OK: {rep.height} blocks, {rep.txs} txs ({rep.invalid_txs} marked invalid), "
               f"certified up to {rep.certified_height}, head {rep.head_hash}")
    if rep.uncertified:
        click.echo(f"not yet certified: {list(rep.uncertified)}")
    for vid, h in rep.equivocations:
        click.echo(f"equivocation seen: validator {vid} at height {h}")
    missing = [f for key, f in digests.items() if key not in rep.found]
    for key, f in digests.items():
        if key in rep.found:
            rec = rep.found[key]
            click.echo(f"audit report {f}: recorded at height {rec['height']} by "
                       f"{rec['auditor']} ({'FLAGGED' if rec['flagged'] else 'not refuted'}, "
                       f"device {rec['device']}, session {rec['session_id']})")
    if missing:
        click.echo(f"verify FAILED: audit report {missing[0]} is not recorded on the chain "
                   "(sha256 of report.json not in any valid audit_report tx)", err=True)
        raise _ExitCodeError(EXIT_FAILURE)
    if require_certified and rep.certified_height < rep.height:
        click.echo(f"verify FAILED: head block {rep.height} is not certified (blocks "
                   f"{list(rep.uncertified)} lack a quorum certificate; --require-certified)",
                   err=True)
        raise _ExitCodeError(EXIT_FAILURE)


@cli.command("catch-up")
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@click.option("--from", "peer_url", required=True, help="API URL of a peer node")
def catch_up(data_dir: Path, peer_url: str) -> None:
    """Adopt a peer's certified blocks into a stopped node (each re-executed and checked)."""
    from ledger_node.sync import catch_up_from_peer

    node = LedgerNode(data_dir)
    try:
        before = node.height
        top = catch_up_from_peer(node, LedgerClient(peer_url))
    finally:
        node.close()
    click.echo(f"caught up from height {before} to {top}")


@cli.command()
@click.argument("txid")
@url_option
def prove(txid: str, url: str) -> None:
    """Print the inclusion proof of a tx and check it against the node's validator set."""
    client = LedgerClient(url)
    p = client.proof(txid)
    hdr = verify_proof(p, validators=client.validators(), require_valid=False)
    _print({"chain_id": p.chain_id, "height": p.height, "header": p.header,
            "certificate": [list(c) for c in p.certificate], "tx": p.tx,
            "leaf_index": p.leaf_index, "tree_size": p.tree_size,
            "audit_path": list(p.audit_path), "valid": hdr.invalid_reason(p.leaf_index) is None})


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    # a ClickException keeps its own code: 2 for usage errors, as every splitfed CLI
    return run_click(cli, argv, prog_name="splitfed-ledger", errors=(
        ((ConfigError, KeyFileError), EXIT_USAGE), ((SplitfedError, OSError), EXIT_FAILURE)))


if __name__ == "__main__":
    sys.exit(main())
