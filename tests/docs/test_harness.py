"""The doc harness's text handling (pure): extraction, mapping, skips."""

from __future__ import annotations

from tests.docs.harness import Mapping, config_files, plan, shell_commands

DOC = """# T

```sh
# a comment
sudo -u splitfed /opt/splitfed/venv/bin/splitfed-agent keys generate \\
     --state-dir /var/lib/splitfed-agent
install -d -m 0700 -o splitfed -g splitfed /var/lib/splitfed-agent
systemctl daemon-reload && systemctl enable --now splitfed-agent
splitfed-ledger run --config /etc/splitfed/ledger.toml
curl http://127.0.0.1:7070/x
```

`ledger.toml`:

```toml
data_dir = "/var/lib/splitfed/ledger"
```

For etcd, add:

```toml
[etcd]
```
"""
M = Mapping(root="/tmp/r", venv_bin="/v/bin", checkout="/repo", port=4242)


def test_continuations_are_joined_and_comments_dropped() -> None:
    cmds = shell_commands(DOC)
    assert cmds[0] == (5, "sudo -u splitfed /opt/splitfed/venv/bin/splitfed-agent keys "
                          "generate --state-dir /var/lib/splitfed-agent")
    assert len(cmds) == 5


def test_plan_maps_paths_strips_sudo_and_owner_and_skips_with_reasons() -> None:
    steps = plan(DOC, M)
    assert steps[0].command == "/v/bin/splitfed-agent keys generate --state-dir " \
                               "/tmp/r/var/lib/splitfed-agent"
    assert steps[1].command == "install -d -m 0700 /tmp/r/var/lib/splitfed-agent"
    assert steps[2].command is None and "systemd" in (steps[2].skip_reason or "")
    assert steps[3].service and steps[3].command == (
        "splitfed-ledger run --config /tmp/r/etc/splitfed/ledger.toml")
    assert steps[4].command == "curl http://127.0.0.1:4242/x"


def test_only_captioned_toml_blocks_are_files() -> None:
    assert config_files(DOC) == {"ledger.toml": 'data_dir = "/var/lib/splitfed/ledger"\n'}
    assert M.apply('data_dir = "/var/lib/x"') == 'data_dir = "/tmp/r/var/lib/x"'
