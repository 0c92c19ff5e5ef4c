"""A publishing agent process for the transport integration tests.

Run with ``python -m tests.integration.agent.transport._driver``.  It uses the
real release path (``Accountant`` -> ``Spool`` -> ``Outbox`` -> ``PahoPublisher``)
exactly as the agent does, with real messages: a synthetic activation row is
clipped and noised by ``privatize_activations`` and sent as a sealed
``ActivationBatch`` carrying ``epsilon_spent``.

Prints one line per event on stdout: ``READY``, ``RELEASED <seq> <epsilon>``,
``HALTED <releases> <epsilon>``, ``DRAINED``.  Exit codes: 0 all released and
drained, 3 privacy budget exhausted (after draining), 4 spool did not drain.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nacl.signing
import numpy as np

from agent.mqtt import MqttConfig, PahoPublisher
from agent.outbox import Outbox
from agent.privacy import Accountant, GaussianRelease, privatize_activations, secure_rng
from agent.spool import Spool
from protocol import topics
from protocol.errors import BudgetExceeded
from protocol.messages import seal
from protocol.training import ActivationBatch, DpParams
from service.notify import SystemdNotifier


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

    rng = secure_rng()
    dp = DpParams(mode="sl-frozen", clip_norm=1.0, noise_multiplier=args.noise, label_mode="plain",
                  label_epsilon=None)

    events = [GaussianRelease(noise_multiplier=args.noise)]

    def build(seq: int) -> tuple[str, bytes]:
        row = np.full((1, 8), 0.5)  # stands in for the client half's output of one window
        noisy = privatize_activations(row, clip_norm=dp.clip_norm,
                                      noise_multiplier=dp.noise_multiplier, rng=rng)
        msg = ActivationBatch(session="s1", round=0, step=seq, device=args.device, seq=seq,
                              model_hash="0" * 64, dp=dp, activations=noisy.astype(np.float32),
                              labels=np.array([seq % 3], dtype=np.int64),
                              epsilon_spent=accountant.epsilon_after(events))
        return topics.up(args.org, args.device), seal(msg, signing_key=key, kid=args.device)

    code = 0
    while spool.next_seq() < args.total:
        notifier.watchdog()
        try:
            rel = outbox.release(build, events)
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
