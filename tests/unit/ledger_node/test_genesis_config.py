"""Genesis, node config and the quorum rule."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ledger_node.config import load_config, parse_config
from protocol.errors import ConfigError
from protocol.ledger.block import max_faulty, quorum
from protocol.ledger.genesis import Genesis, load_genesis, write_genesis_with_keys


@pytest.mark.parametrize(("n", "f", "q"), [(1, 0, 1), (2, 0, 2), (3, 0, 2), (4, 1, 3),
                                           (5, 1, 4), (6, 1, 4), (7, 2, 5), (10, 3, 7)])
def test_quorum_intersects_in_an_honest_validator(n: int, f: int, q: int) -> None:
    assert (max_faulty(n), quorum(n)) == (f, q)
    assert 2 * q - n >= f + 1  # any two quorums share at least one honest validator
    assert q <= n - f or n < 3  # reachable with f validators down (n >= 3)


def test_genesis_helper_writes_private_keys(tmp_path: Path) -> None:
    g = write_genesis_with_keys(tmp_path, chain_id="c1", org_ids=["a", "b"], validators=["a"])
    assert load_genesis(tmp_path / "genesis.json") == g
    assert [o.validator is not None for o in g.orgs] == [True, False]
    for f in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert g.initial_state()["validators"] == {"a": g.orgs[0].validator}


def test_genesis_reports_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        Genesis.from_json_obj({"chain_id": "a/b", "orgs": [], "ordering": {"kind": "paxos",
                                                                          "block_max_txs": 0}})
    text = str(err.value)
    for expected in ("chain_id", "at least one org", "ordering must be", "block_max_txs"):
        assert expected in text


def test_config_from_toml_and_environment(tmp_path: Path) -> None:
    p = tmp_path / "ledger.toml"
    p.write_text('data_dir = "/tmp/x"\nlisten = "127.0.0.1:7171"\n'
                 'validator_keys = { org1 = "/k/org1.key" }\n[etcd]\nendpoints = ["http://a:1"]\n')
    cfg = load_config(p, env={"SPLITFED_LEDGER_NODE_ID": "org1",
                              "SPLITFED_LEDGER_ETCD_ENDPOINTS": "http://b:2,http://c:3"})
    assert (cfg.port, cfg.node_id, cfg.etcd_endpoints) == (7171, "org1",
                                                          ("http://b:2", "http://c:3"))
    assert cfg.validator_keys == {"org1": Path("/k/org1.key")}
    with pytest.raises(ConfigError) as err:
        parse_config({"listen": "0.0.0.0:80", "colour": "blue"}, env={})
    assert {"unknown key 'colour'", "data_dir is required"} <= set(err.value.problems)
    with pytest.raises(ConfigError, match="loopback"):
        parse_config({"data_dir": "/x", "listen": "0.0.0.0:80"}, env={})


def test_http_table_sizes_the_api_pool() -> None:
    from protocol.errors import ConfigError

    cfg = parse_config({"data_dir": "/x", "http": {"threads": 32, "max_long_polls": 12,
                                                  "connection_limit": 1000}}, env={})
    assert (cfg.http.threads, cfg.http.max_long_polls, cfg.http.connection_limit) == (32, 12,
                                                                                       1000)
    assert parse_config({"data_dir": "/x"}, env={}).http.threads == 16
    with pytest.raises(ConfigError) as err:
        parse_config({"data_dir": "/x", "http": {"threads": 4, "max_long_polls": 4,
                                                 "connection_limit": True, "backlog": 9}},
                     env={})
    text = str(err.value)
    assert "http.max_long_polls" in text and "http.connection_limit must be an integer" in text
    assert "unknown key 'http.backlog'" in text
