"""Ledger throughput and finality latency: solo vs etcd (3 members), Ed25519 share.

Run: ``.venv/bin/python -m bench ledger`` (writes bench/results/ledger.{json,md}).

* solo: one in-process node, txs submitted straight to the orderer and,
  separately, over the loopback HTTP API; SQLite WAL with synchronous=FULL,
  so every block is durable when it is counted.
* etcd: 3 etcd members + 3 ledger node processes on loopback; txs submitted
  over HTTP to the three nodes from 3 threads; throughput until every tx is in
  a certified block, and finality latency (submit -> certified block that
  holds it, seen by the submitting node) at a steady offered load.
* Ed25519 share: measured cost of one verification x verifications per tx
  (3 for a device registration: tx at submit, tx at execution, device
  request in the contract) over the measured cost per committed tx.

Every figure in one file comes from the same run on the same machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nacl.signing

from bench.common import peak_rss_mib, time_per_call, write_results
from deploy.etcd import EtcdCluster
from ledger_node.api import LedgerApi
from ledger_node.errors import LedgerError
from ledger_node.node import LedgerNode
from ledger_node.solo import SoloOrderer
from protocol.keys import load_signing_key
from protocol.ledger.genesis import load_genesis, write_genesis_with_keys
from protocol.ledger.registration import make_registration_request
from protocol.ledger.tx import decode_tx, make_tx
from service.ledger_client import LedgerClient

REPO = Path(__file__).resolve().parent.parent
ORGS = ("org1", "org2", "org3")


def _txs(admins: dict[str, nacl.signing.SigningKey], chain: str, n: int,
         start: int = 0) -> list[bytes]:
    out = []
    for i in range(start, start + n):
        org = ORGS[i % len(admins)] if len(admins) > 1 else next(iter(admins))
        dev = nacl.signing.SigningKey.generate()
        req = make_registration_request(signing_key=dev, org=org, device=f"d{i}")
        out.append(make_tx("device_register", {"request": req}, signing_key=admins[org],
                           submitter=f"{org}/admin", chain_id=chain, nonce=i))
    return out


def bench_solo(tmp: Path, n: int = 3000) -> dict[str, float]:
    write_genesis_with_keys(tmp / "g", chain_id="bench-solo", org_ids=["org1"],
                            block_max_txs=200, block_max_ms=50)
    keys = tmp / "g" / "keys"
    genesis = load_genesis(tmp / "g" / "genesis.json")
    admins = {"org1": load_signing_key(keys / "org1-admin.key")}
    vkeys = {"org1": load_signing_key(keys / "org1-validator.key")}
    res: dict[str, float] = {}
    for mode in ("direct", "http"):
        LedgerNode.init(tmp / mode, genesis)
        node = LedgerNode(tmp / mode, validator_keys=vkeys)
        orderer = SoloOrderer(node, proposer="org1")
        api = LedgerApi(node, orderer)
        txs = _txs(admins, "bench-solo", n)
        orderer.start()
        api.start()
        client = LedgerClient(api.url)
        t0 = time.perf_counter()
        txids = [orderer.submit(t) if mode == "direct" else client.submit(t) for t in txs]
        client.wait_for(txids[-1], timeout=120)
        dt = time.perf_counter() - t0
        assert all(r is not None and r.valid for r in (node.receipt(t) for t in txids))
        res[f"solo_{mode}_txs_per_s"] = n / dt
        res[f"solo_{mode}_s_per_tx"] = dt / n
        api.stop()
        orderer.stop()
        node.close()
    return res


def _start_node(cfg: Path, data: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    (data / "api.url").unlink(missing_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ledger_node.cli", "run", "--config",
                                 str(cfg)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        f = data / "api.url"
        if f.exists() and f.read_text().strip():
            url = f.read_text().strip()
            try:
                LedgerClient(url).height()
                return proc, url
            except LedgerError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("ledger node did not start")


def bench_etcd(tmp: Path, n: int = 1500, rate: float = 100.0, seconds: float = 10.0
               ) -> dict[str, float]:
    write_genesis_with_keys(tmp / "g", chain_id="bench-etcd", org_ids=ORGS, ordering="etcd",
                            block_max_txs=200, block_max_ms=100)
    keys = tmp / "g" / "keys"
    genesis = load_genesis(tmp / "g" / "genesis.json")
    admins = {o: load_signing_key(keys / f"{o}-admin.key") for o in ORGS}
    cluster = EtcdCluster(tmp / "etcd", n=3)
    procs: list[subprocess.Popen[bytes]] = []
    res: dict[str, float] = {}
    try:
        cluster.start()
        urls = []
        for i, org in enumerate(ORGS):
            LedgerNode.init(tmp / org, genesis)
            eps = cluster.client_urls[i:] + cluster.client_urls[:i]
            cfg = tmp / f"{org}.toml"
            cfg.write_text(f'data_dir = "{tmp / org}"\nlisten = "127.0.0.1:0"\n'
                           f'node_id = "{org}"\n'
                           f'validator_keys = {{ {org} = "{keys / (org + "-validator.key")}" }}\n'
                           "[etcd]\nendpoints = [" + ", ".join(f'"{e}"' for e in eps) + "]\n")
            p, url = _start_node(cfg, tmp / org, tmp / f"{org}.log")
            procs.append(p)
            urls.append(url)
        clients = [LedgerClient(u, timeout=10) for u in urls]

        # throughput: 3 submitting threads, one per node, as fast as they can
        txs = _txs(admins, "bench-etcd", n)
        txids: list[list[str]] = [[], [], []]

        def push(k: int) -> None:
            txids[k] = [clients[k].submit(t) for t in txs[k::3]]

        t0 = time.perf_counter()
        threads = [threading.Thread(target=push, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        last = [clients[0].wait_for(ids[-1], timeout=120) for ids in txids]
        clients[0].wait_height(max(r.height for r in last), timeout=60, certified=True)
        dt = time.perf_counter() - t0
        res["etcd_txs_per_s"] = n / dt

        # latency at a steady offered load, finality = certified block seen by node 0
        lat_txs = _txs(admins, "bench-etcd", int(rate * seconds), start=n)
        sent: dict[str, float] = {}
        done: dict[str, float] = {}
        stop = threading.Event()

        def watch() -> None:
            h = clients[0].certified_height()
            while not stop.is_set() or len(done) < len(sent):
                top = clients[0].wait_height(h + 1, timeout=1.0, certified=True)
                now = time.perf_counter()
                while h < top:
                    h += 1
                    for t in clients[0].block(h)["txs"]:
                        done.setdefault(t["txid"], now)
                if stop.is_set() and time.perf_counter() - stop_at[0] > 30:
                    return

        stop_at = [0.0]
        w = threading.Thread(target=watch)
        w.start()
        t_start = time.perf_counter()
        for i, raw in enumerate(lat_txs):
            target = t_start + i / rate
            while (now := time.perf_counter()) < target:
                time.sleep(target - now)
            txid = decode_tx(raw).txid
            sent[txid] = time.perf_counter()
            clients[i % 3].submit(raw)
        stop_at[0] = time.perf_counter()
        stop.set()
        w.join()
        lats = sorted(done[t] - s for t, s in sent.items() if t in done)
        res["etcd_offered_txs_per_s"] = rate
        res["etcd_finality_p50_ms"] = 1000 * statistics.median(lats)
        res["etcd_finality_p99_ms"] = 1000 * lats[int(0.99 * (len(lats) - 1))]
        res["etcd_latency_samples"] = len(lats)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        cluster.stop()
    return res


def bench_ed25519() -> dict[str, float]:
    key = nacl.signing.SigningKey.generate()
    msg = b"x" * 300
    sig = key.sign(msg).signature
    vk = key.verify_key
    return {"ed25519_verify_s": time_per_call(lambda: vk.verify(msg, sig)),
            "ed25519_sign_s": time_per_call(lambda: key.sign(msg))}


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data: dict[str, Any] = {}
        data.update(bench_ed25519())
        (tmp / "solo").mkdir()
        data.update(bench_solo(tmp / "solo"))
        (tmp / "etcd").mkdir()
        data.update(bench_etcd(tmp / "etcd"))
    verify_per_tx = 3 * data["ed25519_verify_s"]
    data["ed25519_share_solo_direct"] = verify_per_tx / data["solo_direct_s_per_tx"]
    data["ed25519_share_solo_http"] = verify_per_tx / data["solo_http_s_per_tx"]
    # per etcd node: every node executes every tx (2 verifies), 1 in 3 also checks it at submit
    per_node = (7 / 3) * data["ed25519_verify_s"]
    data["ed25519_share_etcd_per_node"] = per_node * data["etcd_txs_per_s"]
    data["peak_rss_mib"] = peak_rss_mib()
    table = [
        ("solo, submit in-process (txs/s, durable)", f"{data['solo_direct_txs_per_s']:.0f}"),
        ("solo, submit over HTTP (txs/s, durable)", f"{data['solo_http_txs_per_s']:.0f}"),
        ("etcd 3 members + 3 nodes (txs/s to certified)", f"{data['etcd_txs_per_s']:.0f}"),
        ("etcd / solo-HTTP throughput ratio",
         f"{data['etcd_txs_per_s'] / data['solo_http_txs_per_s']:.2f}"),
        (f"etcd finality p50 at {data['etcd_offered_txs_per_s']:.0f} tx/s (ms)",
         f"{data['etcd_finality_p50_ms']:.0f}"),
        ("etcd finality p99 (ms)", f"{data['etcd_finality_p99_ms']:.0f}"),
        ("Ed25519 verify (us)", f"{1e6 * data['ed25519_verify_s']:.0f}"),
        ("Ed25519 share of solo cost per tx (3 verifies/tx)",
         f"{100 * data['ed25519_share_solo_direct']:.0f} % (in-process), "
         f"{100 * data['ed25519_share_solo_http']:.0f} % (HTTP)"),
        ("Ed25519 busy fraction of one core per etcd node",
         f"{100 * data['ed25519_share_etcd_per_node']:.0f} %"),
        ("peak RSS of the bench process (MiB)", f"{data['peak_rss_mib']:.0f}"),
    ]
    write_results("ledger", data, table)


if __name__ == "__main__":
    main()
