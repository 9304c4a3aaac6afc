"""Settings: defaults < TOML file < PDP_ environment < command line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pdp import config as settings
from pdp.config import ConfigError


def parse(argv: list[str], env: dict[str, str] | None = None) -> settings.Config:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    return settings.from_args(parser.parse_args(argv), env or {})


def test_defaults_listen_on_loopback() -> None:
    config = settings.load()
    assert config.server.listen == "127.0.0.1:50051"
    assert config.server.workers == 1
    assert config.limits.max_batch == 1000
    assert config.policy.dir == "policies"


def test_layers_override_in_order(tmp_path: Path) -> None:
    toml = tmp_path / "pdp.toml"
    toml.write_text(
        '[server]\nlisten = "127.0.0.1:7000"\nthreads = 4\n'
        "[server.tls]\ncert_file = \"/c.pem\"\n"
        "[limits]\nmax_batch = 10\nmax_id_length = 99\n"
        "[policy]\nwatch = false\n"
    )
    env = {"PDP_LIMITS_MAX_BATCH": "20", "PDP_SERVER_THREADS": "8", "PDP_CONFIG": str(toml)}
    config = parse(["--listen", "127.0.0.1:9000", "--limits-max-batch", "30"], env)
    assert config.server.listen == "127.0.0.1:9000"  # command line over file
    assert config.limits.max_batch == 30  # command line over environment over file
    assert config.server.threads == 8  # environment over file
    assert config.limits.max_id_length == 99  # file over default
    assert config.server.tls.cert_file == "/c.pem"
    assert config.policy.watch is False


def test_every_setting_has_a_flag_and_an_env_var() -> None:
    for s in settings.settings():
        config = parse([], {s.env: _sample(s)})
        via_env = _get(config, s.path)
        assert _get(parse([s.long_flag, _sample(s)]), s.path) == via_env


def _sample(s: settings.Setting) -> str:
    if s.hint in (bool, "bool"):
        return "false"
    if s.path == ("identity", "issuers"):  # a list of tables: JSON outside the file
        return '[{"issuer": "https://idp.example"}]'
    if s.default is None or isinstance(s.default, str):
        return "text"
    return "7"


def _get(config: object, path: tuple[str, ...]) -> object:
    for name in path:
        config = getattr(config, name)
    return config


def test_workers_auto_is_one_per_core() -> None:
    config = parse(["--workers", "auto"])
    assert config.server.workers == 0
    assert settings.worker_count(config) >= 1


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--workers", "many"], {}, "the command line: server.workers: invalid literal"),
        (["--limits-max-batch", "-1"], {}, "limits.max_batch: must not be negative"),
        ([], {"PDP_SERVER_REFLECTION": "maybe"}, "$PDP_SERVER_REFLECTION: server.reflection"),
        ([], {"PDP_NO_SUCH": "1"}, "$PDP_NO_SUCH: unknown setting"),
    ],
)
def test_bad_settings_name_the_setting(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(argv, env)
    assert message in str(err.value)


def test_unknown_or_mistyped_keys_in_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "pdp.toml"
    toml.write_text("[server]\nlisten_on = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'server\.listen_on'"):
        parse(["--config", str(toml)])
    toml.write_text("[server]\nthreads = \"four\"\n")
    with pytest.raises(ConfigError, match=r"server\.threads"):
        parse(["--config", str(toml)])
    toml.write_text("[server\n")
    with pytest.raises(ConfigError, match=str(toml)):
        parse(["--config", str(toml)])
