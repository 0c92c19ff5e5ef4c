"""Ledger HTTP API under 200 concurrent clients: connection errors and latency.

Run: ``.venv/bin/python -m bench ledger_http`` (writes bench/results/ledger_http.{json,md}).

A real node process (``splitfed-ledger run``, solo ordering, one org) on
loopback; this process runs ``CLIENTS`` threads released at once by a
barrier (the burst that used to overflow ``http.server``'s listen backlog of
5), each making ``REQUESTS`` calls: ``/v1/height``, ``/v1/block/<h>``,
``/v1/receipt/<txid>`` in rotation and one ``POST /v1/tx`` (a device
registration). Each pass is bounded in count (CLIENTS x REQUESTS) and in
time (``PASS_DEADLINE_S``; unfinished calls are reported, not waited for).

Passes:

* ``waitress, no retry``: the node as shipped, clients with ``NO_RETRY``, so
  every refused/reset/timed-out connection is counted as it happens;
* ``waitress, default retry``: same with the client's default retry policy
  (errors left after retries, what a gateway would see);
* ``stdlib http.server, no retry``: the same WSGI app and node served by
  ``wsgiref`` on ``socketserver.ThreadingMixIn`` (listen backlog 5, a thread
  per connection), i.e. the previous server, as the baseline.

Latency is per call as the client sees it (connect + request + answer),
p50/p99/max over successful calls. Clients and node share the host's cores
(and, here, a machine shared with other jobs: load average is recorded).

Reading the figures: with 200 callers always in flight and a pool of 16
workers, a call's latency under waitress is mostly queueing (Little's law:
200 in flight / ~500 calls/s = 0.4 s); the stdlib server answers the
connections it admitted at once (low p50) but drops others from its 5-deep
accept queue (resets, SYN retransmissions: seconds of p99/max) and ends
with a third of the throughput.
"""

from __future__ import annotations

import os
import signal
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import nacl.signing

from bench.common import peak_rss_mib, write_results
from ledger_node.errors import LedgerError
from ledger_node.node import LedgerNode
from protocol.keys import load_signing_key
from protocol.ledger.genesis import load_genesis, write_genesis_with_keys
from protocol.ledger.registration import make_registration_request
from protocol.ledger.tx import make_tx
from service.ledger_client import LedgerClient
from service.retry import DEFAULT_RETRY, NO_RETRY, RetryPolicy

REPO = Path(__file__).resolve().parent.parent
CLIENTS = 200
REQUESTS = 20
PASS_DEADLINE_S = 180.0
CHAIN = "bench-http"


def _tx(admin: nacl.signing.SigningKey, i: int) -> bytes:
    dev = nacl.signing.SigningKey.generate()
    req = make_registration_request(signing_key=dev, org="org1", device=f"b{i}")
    return make_tx("device_register", {"request": req}, signing_key=admin,
                   submitter="org1/admin", chain_id=CHAIN, nonce=i)


def _wait_url(data: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    f = data / "api.url"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ledger node exited with {proc.returncode}")
        if f.exists() and f.read_text().strip():
            url = f.read_text().strip()
            try:
                LedgerClient(url, retry=NO_RETRY).height()
                return url
            except LedgerError:
                pass
        time.sleep(0.05)
    raise RuntimeError("ledger node did not start")


def _start(tmp: Path, stdlib: bool) -> tuple[subprocess.Popen[bytes], str]:
    data = tmp / "data"
    (data / "api.url").unlink(missing_ok=True)
    keys = tmp / "g" / "keys"
    cfg = tmp / "node.toml"
    cfg.write_text(f'data_dir = "{data}"\nlisten = "127.0.0.1:0"\nnode_id = "org1"\n'
                   f'validator_keys = {{ org1 = "{keys / "org1-validator.key"}" }}\n')
    cmd = ([sys.executable, "-m", "bench.bench_ledger_http", "--serve-stdlib", str(cfg)]
           if stdlib else [sys.executable, "-m", "ledger_node.cli", "run", "--config", str(cfg)])
    with (tmp / "node.log").open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    return proc, _wait_url(data, proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _classify(exc: BaseException) -> str:
    text = f"{exc} {exc.__cause__}"
    for key, name in (("reset", "reset"), ("refused", "refused"), ("timed out", "timeout"),
                      ("Broken pipe", "broken_pipe"), ("RemoteDisconnected", "disconnected"),
                      ("closed connection", "disconnected"), ("503", "http_503")):
        if key in text:
            return name
    return type(exc).__name__


def run_pass(url: str, policy: RetryPolicy, txs: list[bytes], known: list[str],
             top: int) -> dict[str, Any]:
    barrier = threading.Barrier(CLIENTS)
    lock = threading.Lock()
    lat: list[float] = []
    errors: Counter[str] = Counter()
    done = [0]

    def client(k: int) -> None:
        c = LedgerClient(url, timeout=30, retry=policy)
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            return
        for i in range(REQUESTS):
            t0 = time.perf_counter()
            try:
                if i == 0:
                    c.submit(txs[k])
                elif i % 3 == 1:
                    c.height()
                elif i % 3 == 2:
                    c.block(1 + (k + i) % top)
                else:
                    c.receipt(known[(k + i) % len(known)])
            except LedgerError as exc:
                with lock:
                    errors[_classify(exc)] += 1
                continue
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                done[0] += 1

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    deadline = time.monotonic() + PASS_DEADLINE_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    wall = time.perf_counter() - t0
    total = CLIENTS * REQUESTS
    lat.sort()
    failed = sum(errors.values())
    return {
        "calls": total, "ok": done[0], "errors": failed, "errors_by_kind": dict(errors),
        "unfinished": total - done[0] - failed, "error_rate": failed / total,
        "p50_ms": 1000 * statistics.median(lat) if lat else None,
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else None,
        "max_ms": 1000 * lat[-1] if lat else None, "wall_s": wall,
        "calls_per_s": done[0] / wall,
    }


def _prepare(tmp: Path, stdlib: bool, offset: int) -> tuple[subprocess.Popen[bytes], str,
                                                             list[bytes], list[str], int]:
    admin = load_signing_key(tmp / "g" / "keys" / "org1-admin.key")
    proc, url = _start(tmp, stdlib)
    c = LedgerClient(url, timeout=30)
    known = [c.submit(_tx(admin, offset + i)) for i in range(20)]
    top = c.wait_for(known[-1], timeout=60).height
    txs = [_tx(admin, offset + 100 + i) for i in range(CLIENTS)]
    return proc, url, txs, known, top


def main() -> None:
    passes = [("waitress, no retry", False, NO_RETRY),
              ("waitress, default retry", False, DEFAULT_RETRY),
              ("stdlib http.server, no retry", True, NO_RETRY)]
    results: dict[str, Any] = {"clients": CLIENTS, "requests_per_client": REQUESTS,
                               "load_avg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        write_genesis_with_keys(tmp / "g", chain_id=CHAIN, org_ids=["org1"],
                                block_max_txs=100, block_max_ms=50)
        LedgerNode.init(tmp / "data", load_genesis(tmp / "g" / "genesis.json"))
        for k, (name, stdlib, policy) in enumerate(passes):
            proc, url, txs, known, top = _prepare(tmp, stdlib, offset=k * 1000)
            try:
                results[name] = run_pass(url, policy, txs, known, top)
            finally:
                _stop(proc)
            print(name, results[name], flush=True)
    results["load_avg_after"] = os.getloadavg()
    results["peak_rss_mib"] = peak_rss_mib()
    table = [("clients x calls per pass", f"{CLIENTS} x {REQUESTS}")]
    for name, _, _ in passes:
        r = results[name]
        table += [
            (f"{name}: connection errors", f"{r['errors']} of {r['calls']} "
             f"({100 * r['error_rate']:.2f} %) {r['errors_by_kind'] or ''}".strip()),
            (f"{name}: p50 / p99 / max latency (ms)",
             f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} / {r['max_ms']:.0f}"
             if r["p50_ms"] is not None else "n/a"),
            (f"{name}: calls/s, unfinished", f"{r['calls_per_s']:.0f}, {r['unfinished']}"),
        ]
    la, lb = results["load_avg_before"], results["load_avg_after"]
    table.append(("load average before / after (1 min)", f"{la[0]:.1f} / {lb[0]:.1f}"))
    write_results("ledger_http", results, table)


# ------------------------------------------------------------- stdlib baseline
class _ThreadingWsgi(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # request_queue_size stays at socketserver's 5, as before


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_stdlib(config: Path) -> None:
    """The node with its API app under ``wsgiref`` + threads (baseline only)."""
    from ledger_node.api import LedgerApi
    from ledger_node.app import LedgerApp
    from ledger_node.config import load_config

    app = LedgerApp(load_config(config))
    api: LedgerApi = app.api
    httpd = make_server("127.0.0.1", 0, api.wsgi, server_class=_ThreadingWsgi,
                        handler_class=_QuietHandler)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app.orderer.start()
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1})
    t.start()
    (app.config.data_dir / "api.url").write_text(
        f"http://127.0.0.1:{httpd.server_address[1]}\n")
    stop.wait()
    httpd.shutdown()
    httpd.server_close()
    app.stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-stdlib":
        serve_stdlib(Path(sys.argv[2]))
    else:
        main()
