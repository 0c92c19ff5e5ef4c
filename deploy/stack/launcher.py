"""``splitfed demo``: the whole system on one machine, as real processes on loopback.

Theory of operation
-------------------
1. *Plan* (:mod:`deploy.stack.plan`): organisations, devices, each device's
   non-IID share of the training set, held-out splits, noise for the budget.
2. *Consortium*: a genesis with fresh keys for every org role and the
   server; ledger nodes (``solo``: one node holding the validators' keys;
   ``etcd``: an etcd member and a ledger node per organisation).
3. *Broker*: Mosquitto with one password per device, gateway and server, and
   a per-user ACL (a device may publish only under its own id).
4. *Session*: ``splitfed-server session create`` writes model hashes, DP
   policy, rounds and groups to the ledger.
5. *Devices*, each through the real path: ``splitfed-agent keys generate``,
   ``splitfed-agent provision`` (request signed by the device key), the org
   admin's ``device_register`` transaction (``splitfed-ledger make-tx`` +
   ``submit``); a simulated Modbus meter (``splitfed-agent simulate``, TCP or
   RTU over a pty) serving the device's records once each; the agent
   (``splitfed-agent run``).
6. *Gateways* and the *server*; the server drives the rounds and exits when
   the session is done; validators vote on each proposal.
7. *Watch* (:mod:`deploy.stack.progress`) and *summarise*: accuracy per
   round from the ledger's proposals, epsilon per device from the ledger and
   from each agent, accepted/rejected counts from the gateways' metrics,
   ``splitfed-ledger verify``, a PNG plot and ``summary.json``.

Everything runs from ``<run dir>``: configs, keys (0600), databases, logs.

Supervision and deadlines
-------------------------
Every long-running service (etcd members, ledger nodes, Mosquitto, agents,
gateways, the server) is started with :data:`RESTART` and restarted on
failure by the watch loop (:mod:`deploy.stack.supervise`: 1 s backoff
doubling to 8 s, at most 5 restarts per 300 s, then the run fails). Meters
are not restarted: they serve each record once, so a second meter would
serve records again. Every wait has a deadline: start-up of each process
(ledger 60 s, broker 30 s, etcd 30 s, meter 60 s, agent 90 s, gateway 60 s),
the meters' records (300 s) and each round: :func:`round_budget_s` =
``round_deadline_s`` + ``collect_deadline_s`` (the server's round policy,
120 + 60 s by default) + ``decide_s`` (60 s for the votes and the
finalise) + the supervisor's worst-case backoff (23 s) = 263 s by default,
plus :data:`FIRST_ROUND_EXTRA_S` (120 s) for the first round's start-up. A
round that is not decided in time fails the run with what the ledger shows;
every :data:`REPORT_EVERY_S` (30 s) without a decided round a progress line
says what the run is waiting for.

Stopping: Ctrl-C (or any failure) stops the server, gateways, agents,
meters and broker (reverse start order, SIGTERM then SIGKILL after 10 s),
then summarises from the ledger while the ledger nodes still run (a partial
``summary.json`` marked ``"status": "interrupted"`` or ``"failed"``, and
``progress.png``), then stops the ledger nodes and etcd. The run directory
stays.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from deploy.broker import MOSQUITTO, MosquittoBroker
from deploy.stack import configs
from deploy.stack.plan import DevicePlan, StackOptions, StackPlan, make_plan
from deploy.stack.procs import Child, ProcessGroup, StackError, listen_port, port_open, wait_until
from deploy.stack.supervise import RestartEvent, RestartPolicy
from deploy.stack.tsfile import write_ts
from models.data import default_window
from models.datasets.ucr import TsDataset, load_split
from models.manifest import Manifest, artifact_dir, list_artifacts, load_manifest
from protocol.errors import SplitfedError
from protocol.ledger.genesis import write_genesis_with_keys
from service.ledger_client import LedgerClient

log = logging.getLogger(__name__)

__all__ = ["RESTART", "StackRun", "round_budget_s"]

CHAIN_ID = "splitfed-demo"
VIBRATION_LENGTH = 256
BIN = Path(sys.executable).parent

RESTART = RestartPolicy()          # Restart=on-failure, RestartSec 1 s doubling to 8 s,
                                   # StartLimitBurst 5 in 300 s
FIRST_ROUND_EXTRA_S = 120.0        # the first round also loads the model in every process
REPORT_EVERY_S = 30.0              # a progress line when no round was decided for this long
EXIT_GRACE_S = 60.0                # the server exits after the last round is decided


def round_budget_s(o: StackOptions) -> float:
    """Longest a round may take before the launcher gives up on the run (see above)."""
    return (o.round_deadline_s + o.collect_deadline_s + o.decide_s
            + RESTART.worst_case_backoff_s)

# services whose processes stay up until the summary is written (it reads the ledger)
_LEDGER_SERVICES = ("ledger-", "etcd-")


def _port_ready(port: int) -> Callable[[], bool]:
    return lambda: port_open("127.0.0.1", port)


def _file_ready(path: Path) -> Callable[[], bool]:
    return path.exists


def _bin(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


class StackRun:
    """One run of the stack; :meth:`run` returns the summary dict."""

    def __init__(self, options: StackOptions, *,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 echo: Callable[[str], None] = print) -> None:
        self.o = options
        self.root = options.run_dir
        self.echo = echo
        self.on_progress = on_progress
        self.procs = ProcessGroup(log_dir=self.root / "logs",
                                  env={"PYTHONUNBUFFERED": "1"})
        self.broker: MosquittoBroker | None = None
        self.etcd: Any = None
        self.ledger_urls: dict[str, str] = {}
        self.gateway_ports: dict[str, int] = {}
        self.passwords: dict[str, Path] = {}
        self.started = time.monotonic()
        self.restarts: list[RestartEvent] = []
        self._ports: set[int] = set()
        self.watcher: Any = None

    # -- preparation ------------------------------------------------------------------
    def _dataset(self) -> tuple[TsDataset, TsDataset, Path, str]:
        """(train, test, directory holding NAME_TRAIN/TEST.ts, NAME)."""
        name = self.o.dataset
        if name == "synthetic-vibration":
            return self._vibration()
        if name.endswith(".ts"):
            path = Path(name)
            stem = path.name.removesuffix(".ts").removesuffix("_TRAIN").removesuffix("_TEST")
            return (*load_split(path.parent, stem), path.parent, stem)
        train, test = load_split(self.o.data_dir, name)
        return train, test, self.o.data_dir, name

    def _vibration(self) -> tuple[TsDataset, TsDataset, Path, str]:
        """Bearing-fault vibration windows, one simulated machine per device, as .ts files."""
        from models.datasets.vibration import make_vibration_split

        machines = self.o.orgs * self.o.devices_per_org
        train, test = make_vibration_split(machines=machines, train_per_machine=60,
                                           test_per_machine=30, length=VIBRATION_LENGTH,
                                           seed=self.o.seed)
        src = self.root / "data" / "source"
        src.mkdir(parents=True, exist_ok=True)
        for split, ds in (("TRAIN", train), ("TEST", test)):
            write_ts(src / f"VIBRATION_{split}.ts", name="VIBRATION", series=list(ds.series),
                     labels=[ds.class_names[int(v)] for v in ds.labels],
                     class_names=ds.class_names)
        return (*load_split(src, "VIBRATION"), src, "VIBRATION")

    def _manifest(self, dataset: str, src: Path) -> tuple[Manifest, Path]:
        """The committed artifact for (model, cut, dataset), or one built for this run."""
        known = False
        for m in list_artifacts():
            if (m.model_id, m.cut) == (self.o.model, self.o.cut):
                known = True
                if m.dataset == dataset:
                    return m, artifact_dir(m.model_id, m.cut) / "manifest.json"
        if not known:
            raise StackError(f"no model {self.o.model}/cut{self.o.cut} in the zoo")
        out = self.root / "models"
        self.echo(f"building {self.o.model}/cut{self.o.cut} for {dataset} (TensorFlow, once) ...")
        try:
            self._cli([_bin("splitfed-models"), "build", "--model", self.o.model, "--cut",
                       str(self.o.cut), "--dataset", dataset, "--data-dir", str(src),
                       "--out", str(out)], f"model build for {dataset}", timeout=1800)
        except StackError as exc:
            raise StackError(f"{exc}\n(building a model for a new dataset needs the [build] "
                             f"extra: pip install 'iiot-splitfed[build]')") from None
        path = out / self.o.model / f"cut{self.o.cut}" / "manifest.json"
        return load_manifest(path), path

    def _write_eval_sets(self, plan: StackPlan, name: str, src: Path, test: TsDataset) -> None:
        """Held-out data: the server and each validator org get their own part of TEST."""
        splits = {"server": plan.server_eval, **plan.validator_eval}
        for who, idx in splits.items():
            d = self.root / "data" / who
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / f"{name}_TRAIN.ts", d / f"{name}_TRAIN.ts")  # norm constants
            write_ts(d / f"{name}_TEST.ts", name=name, series=[test.series[i] for i in idx],
                     labels=[test.class_names[int(test.labels[i])] for i in idx],
                     class_names=test.class_names)

    def _password(self, user: str) -> Path:
        path = self.root / "secrets" / f"{user}.mqtt"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(18) + "\n")
        path.chmod(0o600)
        self.passwords[user] = path
        return path

    # -- processes ----------------------------------------------------------------------
    def _cli(self, argv: Sequence[str], what: str, *, timeout: float = 120.0) -> str:
        """Run a one-shot command (a real CLI); its output goes to logs/provision.log."""
        res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                             check=False)
        with (self.root / "logs" / "provision.log").open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{res.stdout}{res.stderr}\n")
        if res.returncode != 0:
            raise StackError(f"{what} failed (exit {res.returncode}): "
                             f"{(res.stderr or res.stdout).strip()[-400:]}")
        return res.stdout

    def _start_ledger(self, plan: StackPlan, genesis_dir: Path) -> None:
        keys = genesis_dir / "keys"
        nodes: list[tuple[str, dict[str, Path]]]
        endpoints: list[str] = []
        if self.o.ledger == "solo":
            nodes = [("solo", {org: keys / f"{org}-validator.key" for org in plan.orgs})]
        else:
            from deploy.etcd import EtcdCluster

            # the members run under the supervisor (own session, restarted on failure);
            # EtcdCluster only supplies their command lines and the health check
            self.etcd = EtcdCluster(self.root / "etcd", n=len(plan.orgs),
                                    cluster_name="splitfed-demo")
            for i, member in enumerate(self.etcd.names):
                data = self.etcd.workdir / member
                data.mkdir(parents=True, exist_ok=True)
                data.chmod(0o700)
                self.procs.start(f"etcd-{member}", self.etcd._cmd(i), restart=RESTART)
            self.etcd.wait_healthy(range(len(self.etcd.names)), timeout=30)
            endpoints = list(self.etcd.client_urls)
            nodes = [(org, {org: keys / f"{org}-validator.key"}) for org in plan.orgs]
        for node_id, vkeys in nodes:
            data = self.root / "ledger" / node_id
            self._cli([_bin("splitfed-ledger"), "init", "--genesis",
                       str(genesis_dir / "genesis.json"), "--data-dir", str(data)],
                      f"ledger init {node_id}")
            port = self.port()
            cfg = self.root / "config" / f"ledger-{node_id}.toml"
            cfg.write_text(configs.ledger_toml(data_dir=data, port=port, node_id=node_id,
                                               validator_keys=vkeys, etcd_endpoints=endpoints))
            self.procs.start(f"ledger-{node_id}", [_bin("splitfed-ledger"), "run", "--config",
                                                   str(cfg)],
                             ready=_port_ready(port), timeout=60, restart=RESTART)
            self.ledger_urls[node_id] = f"http://127.0.0.1:{port}"
        if self.o.ledger == "solo":
            for org in plan.orgs:
                self.ledger_urls[org] = self.ledger_urls["solo"]

    def _start_broker(self, plan: StackPlan) -> None:
        users = {configs.mqtt_user(d.org, d.device): "" for d in plan.devices}
        users.update({configs.mqtt_user(org, "gateway"): "" for org in plan.orgs})
        users.update({"server": "", "monitor": ""})
        passwords = {u: self._password(u).read_text().strip() for u in users}
        self.broker = MosquittoBroker(self.root / "broker", port=self.port(), users=passwords,
                                      acl=configs.acl_text(plan))
        # supervised like the other services (own session; a restart keeps the port and the
        # persisted sessions in broker/data/); MosquittoBroker writes the configuration
        conf = self.broker.write_config()
        self.procs.start("broker", [MOSQUITTO, "-c", str(conf)],
                         ready=_port_ready(self.broker.port), timeout=30, restart=RESTART)

    def _provision(self, d: DevicePlan, genesis_dir: Path) -> Path:
        """keys generate -> provision -> admin's device_register tx -> submitted."""
        state = self.root / "agents" / d.name / "state"
        agent = _bin("splitfed-agent")
        self._cli([agent, "keys", "generate", "--state-dir", str(state)], f"{d.name} keys")
        req = self.root / "agents" / d.name / "registration.req"
        self._cli([agent, "provision", "--state-dir", str(state), "--org", d.org,
                   "--device", d.device, "--out", str(req)], f"{d.name} provision")
        body = self.root / "agents" / d.name / "register.json"
        body.write_text(json.dumps({"request": {"@file": str(req)}}))
        tx = self.root / "agents" / d.name / "register.tx"
        ledger = _bin("splitfed-ledger")
        self._cli([ledger, "make-tx", "--kind", "device_register", "--body", str(body),
                   "--key", str(genesis_dir / "keys" / f"{d.org}-admin.key"),
                   "--submitter", f"{d.org}/admin", "--chain-id", CHAIN_ID, "--out", str(tx)],
                  f"{d.name} registration tx")
        self._cli([ledger, "submit", str(tx), "--url", self.ledger_urls[d.org], "--wait", "30"],
                  f"{d.name} registration submit")
        return state

    def _start_meter(self, d: DevicePlan, train_path: Path, window: Any) -> dict[str, object]:
        idx_file = self.root / "agents" / d.name / "indices.json"
        idx_file.write_text(json.dumps(list(d.indices)))
        argv = [_bin("splitfed-agent"), "simulate", "--dataset", str(train_path),
                "--indices", str(idx_file), "--once", "--window-mode", window.mode,
                "--length", str(window.length), "--unit", "1", "--sample-rate", "200"]
        argv += ["--pty"] if d.transport == "rtu" else ["--tcp-port", "0"]
        log_path = self.procs.log_dir / f"meter-{d.name}.log"
        ready: dict[str, Any] = {}

        def is_ready() -> bool:
            try:
                for line in log_path.read_text().splitlines():
                    if line.startswith('{"ready"'):
                        ready.update(json.loads(line))
                        return True
            except (OSError, ValueError):
                return False
            return False

        self.procs.start(f"meter-{d.name}", argv, ready=is_ready, timeout=60)
        if d.transport == "rtu":
            return {"transport": "rtu", "serial": ready["serial"], "baudrate": 115200}
        return {"transport": "tcp", "host": "127.0.0.1", "port": int(ready["tcp_port"])}

    # -- the run --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from deploy.stack.progress import Watcher, finish, summarise

        o = self.o
        for sub in ("logs", "config", "data", "agents"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        train, test, src, name = self._dataset()
        manifest, manifest_path = self._manifest(name, src)
        window = default_window(name)
        plan = make_plan(o, train_labels=train.labels, test_labels=test.labels,
                         num_classes=len(train.class_names))
        self._write_plan(plan)
        self.echo(f"run directory: {self.root}")
        self.echo(f"{len(plan.orgs)} organisations x {o.devices_per_org} devices, {o.rounds} "
                  f"rounds, {name}, model {o.model}/cut{o.cut}, SFL {o.sfl}, ledger {o.ledger}, "
                  + (f"privacy {o.privacy_mode}, epsilon {o.epsilon} (noise multiplier "
                     f"{plan.noise_multiplier:.3f}, {plan.epochs_per_record} epochs per record, "
                     + ("labels public)" if o.labels_public else
                        f"labels by randomized response at {plan.label_epsilon:.3g} per release)")
                     if o.epsilon is not None else "NON-PRIVATE (mode none: epsilon inf)"))
        self.echo(f"majority class {plan.majority_rate:.3f} of the held-out set: the floor "
                  "the model must beat")
        self._write_eval_sets(plan, name, src, test)
        genesis_dir = self.root / "consortium"
        genesis = write_genesis_with_keys(genesis_dir, chain_id=CHAIN_ID, org_ids=plan.orgs,
                                          ordering=o.ledger, block_max_ms=100)
        server_pub = genesis_dir / "server.pub"
        server_pub.write_text(str(genesis.server) + "\n")
        try:
            self.echo("starting ledger, broker ...")
            self._start_ledger(plan, genesis_dir)
            self._start_broker(plan)
            assert self.broker is not None
            ports = {org: self.port() for org in plan.orgs}
            server_cfg = self.root / "config" / "server.toml"
            server_cfg.write_text(configs.server_toml(
                plan, signing_key=genesis_dir / "keys" / "server.key",
                data_dir=self.root / "data" / "server", manifest=manifest_path,
                ledger_url=self.ledger_urls[plan.orgs[0]],
                chain_id=CHAIN_ID, mqtt_port=self.broker.port,
                password_file=self.passwords["server"], metrics_port=self.port(),
                state_dir=self.root / "server-state"))
            self._cli([_bin("splitfed-server"), "session", "create", "--config", str(server_cfg)],
                      "session create")
            self.echo(f"provisioning {len(plan.devices)} devices through the ledger ...")
            with ThreadPoolExecutor(max_workers=2) as pool:
                states = dict(zip([d.name for d in plan.devices],
                                  pool.map(lambda d: self._provision(d, genesis_dir),
                                           plan.devices), strict=True))
            for d in plan.devices:
                meter = self._start_meter(d, src / f"{name}_TRAIN.ts", window)
                cfg = self.root / "config" / f"agent-{d.name}.toml"
                cfg.write_text(configs.agent_toml(
                    plan, d, state_dir=states[d.name], manifest=manifest_path,
                    server_pub=server_pub, genesis=genesis_dir / "genesis.json",
                    mqtt_port=self.broker.port,
                    password_file=self.passwords[configs.mqtt_user(d.org, d.device)],
                    meter=meter, window_length=window.length))
                self.procs.start(f"agent-{d.name}", [_bin("splitfed-agent"), "run", "--config",
                                                     str(cfg)],
                                 ready=_file_ready(states[d.name] / "status.json"),
                                 timeout=90, restart=RESTART)
            self._wait_for_records(plan)
            for org in plan.orgs:
                cfg = self.root / "config" / f"gateway-{org}.toml"
                cfg.write_text(configs.gateway_toml(
                    plan, org, signing_key=genesis_dir / "keys" / f"{org}-gateway.key",
                    validator_key=genesis_dir / "keys" / f"{org}-validator.key",
                    manifest=manifest_path,
                    state_dir=self.root / "gateways" / org, eval_dir=self.root / "data" / org,
                    ledger_url=self.ledger_urls[org], chain_id=CHAIN_ID,
                    mqtt_port=self.broker.port,
                    password_file=self.passwords[configs.mqtt_user(org, "gateway")],
                    metrics_port=ports[org]))
                self.procs.start(f"gateway-{org}", [_bin("splitfed-gateway"), "run", "--config",
                                                    str(cfg)],
                                 ready=_port_ready(ports[org]), timeout=60, restart=RESTART)
            budget = round_budget_s(o)
            self.echo(f"training ... (deadline per round {budget:.0f} s = round "
                      f"{o.round_deadline_s:.0f} + collect {o.collect_deadline_s:.0f} + decide "
                      f"{o.decide_s:.0f} + restart backoff {RESTART.worst_case_backoff_s:.0f}; "
                      f"first round +{FIRST_ROUND_EXTRA_S:.0f} s)")
            server = self.procs.start("server", [_bin("splitfed-server"), "run", "--config",
                                                 str(server_cfg)], critical=False,
                                      restart=RESTART)
            self.gateway_ports = ports
            self.watcher = Watcher(self, plan, gateway_metrics=ports)
            history = self.watcher.watch(server, on_progress=self.on_progress)
            self.stop_services()
            summary = summarise(self, plan, genesis, manifest, history)
        except (KeyboardInterrupt, SplitfedError) as exc:
            if isinstance(exc, KeyboardInterrupt):
                self._finish_partial("interrupted", "Ctrl-C (SIGINT) or SIGTERM", plan,
                                     genesis, manifest)
            else:
                self._finish_partial("failed", str(exc), plan, genesis, manifest)
            raise
        finally:
            self.close()
        return finish(self, summary)

    def _finish_partial(self, status: str, reason: str, plan: StackPlan, genesis: Any,
                        manifest: Manifest) -> None:
        """Write ``summary.json`` and ``progress.png`` for a run that did not complete."""
        from deploy.stack.progress import finish, summarise

        self.stop_services()
        history = self.watcher.history if self.watcher is not None else []
        try:
            summary = summarise(self, plan, genesis, manifest, history)
        except (SplitfedError, OSError) as exc:  # the ledger itself may be what failed
            log.warning("partial summary without the ledger: %s", exc)
            summary = {"run_dir": str(self.root), "per_round": history, "per_device": [],
                       "epsilon_budget": self.o.epsilon, "ledger_error": str(exc)}
        summary.update(status=status, reason=reason[-2000:])
        self.close()
        try:
            finish(self, summary)
        except (SplitfedError, OSError, subprocess.SubprocessError) as exc:
            log.warning("could not finish the partial summary: %s", exc)

    def stop_services(self) -> None:
        """Stop everything but the ledger (the summary reads it), newest first."""
        self.procs.close(only=lambda c: not c.name.startswith(_LEDGER_SERVICES))

    def supervise(self) -> list[RestartEvent]:
        """One supervisor pass (from the watch loop): restarts, reported and recorded."""
        events = self.procs.supervise(started=self.started)
        for e in events:
            self.restarts.append(e)
            self.echo(e.describe())
        return events

    def port(self) -> int:
        """A listening port for one service, kept across its restarts (see listen_port)."""
        return listen_port(self._ports)

    def child(self, name: str) -> Child:
        return self.procs.get(name)

    def _wait_for_records(self, plan: StackPlan, *, timeout: float = 300.0) -> None:
        """Start training only once every device holds its whole share.

        The plan sizes the noise for ceil(R*S*B / n) epochs per record; with every record
        present at round 1 the agent's epoch-ordered batches can never release a record
        more often than that (short end-of-epoch batches only mean fewer epochs). Records
        still streaming in mid-epoch would join later epochs and be released more often,
        so a device could exhaust its budget before the last round.
        """
        self.echo("waiting for every meter to deliver its records ...")

        def held(d: DevicePlan) -> int:
            path = self.root / "agents" / d.name / "state" / "status.json"
            try:
                return int(json.loads(path.read_text())["records"]["held"])
            except (OSError, ValueError, KeyError, TypeError):
                return 0

        def all_loaded() -> bool:
            return all(held(d) >= len(d.indices) for d in plan.devices)

        try:
            wait_until(all_loaded, timeout=timeout, what="meters delivering their records",
                       interval=0.5, report=self.echo, report_every=REPORT_EVERY_S)
        except StackError as exc:
            short = {d.name: f"{held(d)}/{len(d.indices)}" for d in plan.devices
                     if held(d) < len(d.indices)}
            raise StackError(f"{exc}: {short}") from None

    def _write_plan(self, plan: StackPlan) -> None:
        doc = {"orgs": plan.orgs, "noise_multiplier": plan.noise_multiplier,
               "epochs_per_record": plan.epochs_per_record,
               "devices": [{"org": d.org, "device": d.device, "records": len(d.indices),
                            "transport": d.transport} for d in plan.devices],
               "options": {k: str(v) if isinstance(v, Path) else v
                           for k, v in ((f, getattr(self.o, f))
                                        for f in self.o.__dataclass_fields__)}}
        (self.root / "plan.json").write_text(json.dumps(doc, indent=2) + "\n")

    def ledger_client(self, org: str | None = None) -> LedgerClient:
        url = self.ledger_urls[org] if org else next(iter(self.ledger_urls.values()))
        return LedgerClient(url, timeout=10)

    def close(self) -> None:
        """Stop every process (idempotent); logs and databases stay in the run dir."""
        self.procs.close()
        self.broker = None
        self.etcd = None

