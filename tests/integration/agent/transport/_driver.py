"""A publishing agent process for the transport integration tests.

Run with ``python -m tests.integration.agent.transport._driver``.  It uses the
real release path (``Accountant`` -> ``Spool`` -> ``Outbox`` -> ``PahoPublisher``)
exactly as the agent does; only the message content is synthetic (a signed
COSE envelope around ``{"seq", "device", "row"}``).

Prints one line per event on stdout: ``READY``, ``RELEASED <seq> <epsilon>``,
``HALTED <releases> <epsilon>``, ``DRAINED``.  Exit codes: 0 all released and
drained, 3 privacy budget exhausted (after draining), 4 spool did not drain.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nacl.signing

from agent.mqtt import MqttConfig, PahoPublisher
from agent.notify import SystemdNotifier
from agent.outbox import Outbox
from agent.privacy import Accountant, GaussianRelease
from agent.spool import Spool
from protocol import envelope, topics
from protocol.errors import BudgetExceeded

CONTENT_TYPE = "application/vnd.splitfed.test+json"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state-dir", type=Path, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--org", default="acme")
    ap.add_argument("--device", default="dev1")
    ap.add_argument("--password-file", type=Path, required=True)
    ap.add_argument("--total", type=int, required=True)
    ap.add_argument("--budget", type=float, default=1e6)
    ap.add_argument("--noise", type=float, default=4.0)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--drain-timeout", type=float, default=30.0)
    args = ap.parse_args(argv)

    args.state_dir.mkdir(parents=True, exist_ok=True)
    key = nacl.signing.SigningKey.generate()
    accountant = Accountant(epsilon_budget=args.budget, delta=1e-5,
                            state_path=args.state_dir / "privacy.json")
    spool = Spool(args.state_dir / "spool.db")
    cfg = MqttConfig(host="127.0.0.1", port=args.port, org=args.org, device=args.device,
                     username=args.device, password_file=args.password_file,
                     backoff_initial=0.1, backoff_max=0.5, keepalive=5)
    publisher = PahoPublisher(cfg, spool)
    outbox = Outbox(accountant, spool, publisher)
    publisher.state_detail = outbox.state_detail
    publisher.start()
    notifier = SystemdNotifier()
    notifier.ready(status=f"epsilon {accountant.epsilon:.3f}")
    print("READY", flush=True)

    def build(seq: int) -> tuple[str, bytes]:
        body = json.dumps({"seq": seq, "device": args.device, "row": [0.0] * 8}).encode()
        sealed = envelope.sign(body, signing_key=key, kid=args.device, content_type=CONTENT_TYPE)
        return topics.up(args.org, args.device), sealed

    code = 0
    while spool.next_seq() < args.total:
        notifier.watchdog()
        try:
            rel = outbox.release(build, [GaussianRelease(noise_multiplier=args.noise)])
        except BudgetExceeded:
            print(f"HALTED {accountant.releases} {accountant.epsilon!r}", flush=True)
            notifier.status(f"halted: privacy budget {args.budget} exhausted")
            code = 3
            break
        print(f"RELEASED {rel.seq} {rel.epsilon!r}", flush=True)
        time.sleep(args.interval)
    deadline = time.monotonic() + args.drain_timeout
    while spool.depth and time.monotonic() < deadline:
        notifier.watchdog()
        time.sleep(0.05)
    if spool.depth:
        code = 4
    else:
        print("DRAINED", flush=True)
    notifier.stopping()
    publisher.close()
    spool.close()
    accountant.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
