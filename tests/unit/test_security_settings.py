"""Kafka TLS/SASL and Redis ACL/TLS settings: checked when loaded (naming
the key), and passed to each client library in its own terms."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import faust
import pytest

from streamer import app
from streamer.settings import ConfigError, load_settings


def kafka(**values: object) -> dict[str, object]:
    return {"kafka": values}


def test_plaintext_adds_nothing() -> None:
    settings = load_settings(environ={})
    assert app.kafka_options(settings) == {}
    assert app.kafka_options(settings, "aiokafka") == {}
    assert app.faust_credentials(settings) is None
    assert app.redis_options(settings) == {}


def test_sasl_needs_a_user_and_a_password_variable() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.sasl_username.*SASL_SSL needs both"):
        load_settings(environ={}, overrides=kafka(security_protocol="SASL_SSL"))
    with pytest.raises(ConfigError, match=r"kafka\.security_protocol"):
        load_settings(environ={}, overrides=kafka(security_protocol="KERBEROS"))


def test_sasl_plaintext_reads_the_password_from_the_named_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(
        environ={},
        overrides=kafka(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="engine",
            sasl_password_env="KAFKA_PW",
        ),
    )
    with pytest.raises(ConfigError, match=r"kafka\.sasl_password_env.*KAFKA_PW is not set"):
        app.kafka_options(settings)
    monkeypatch.setenv("KAFKA_PW", "pw")
    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "engine",
        "sasl_plain_password": "pw",
    }
    assert app.kafka_options(settings) == expected
    assert app.kafka_options(settings, "aiokafka") == expected
    credentials = app.faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "engine" and credentials.password == "pw"
    assert credentials.ssl_context is None


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
         "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca"],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    return folder / "ca.crt"


def test_ssl_passes_files_to_kafka_python_and_a_context_to_aiokafka(
    ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_PW", "pw")
    settings = load_settings(
        environ={},
        overrides=kafka(
            security_protocol="SASL_SSL",
            sasl_username="engine",
            sasl_password_env="KAFKA_PW",
            ssl_cafile=str(ca_file),
            ssl_check_hostname=False,
        ),
    )
    plain = app.kafka_options(settings)
    assert plain["ssl_cafile"] == str(ca_file) and plain["ssl_check_hostname"] is False
    assert "ssl_context" not in plain
    context = app.kafka_options(settings, "aiokafka")["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.check_hostname is False
    assert any("test-ca" in str(c.get("subject")) for c in context.get_ca_certs())
    credentials = app.faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.ssl_context is not None


def test_tls_files_must_exist_and_need_a_tls_connection(ca_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"kafka\.ssl_cafile.*no such file"):
        load_settings(environ={}, overrides=kafka(security_protocol="SSL", ssl_cafile="/nope"))
    with pytest.raises(ConfigError, match=r"kafka\.security_protocol.*TLS files are set"):
        load_settings(environ={}, overrides=kafka(ssl_cafile=str(ca_file)))
    with pytest.raises(ConfigError, match=r"store\.redis_url.*rediss://"):
        load_settings(environ={}, overrides={"store": {"redis_tls_ca": str(ca_file)}})


def test_redis_user_password_and_tls_files(ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PW", "pw")
    settings = load_settings(
        environ={},
        overrides={
            "store": {
                "redis_url": "rediss://redis.example:6380/0",
                "redis_username": "engine",
                "redis_password_env": "REDIS_PW",
                "redis_tls_ca": str(ca_file),
            }
        },
    )
    assert app.redis_options(settings) == {
        "username": "engine",
        "password": "pw",
        "ssl_ca_certs": str(ca_file),
    }


def test_env_vars_set_the_security_keys() -> None:
    settings = load_settings(
        environ={
            "HOTSPOTS_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "HOTSPOTS_KAFKA__SASL_USERNAME": "engine",
            "HOTSPOTS_KAFKA__SASL_PASSWORD_ENV": "KAFKA_PW",
            "HOTSPOTS_STORE__CLUSTER": "true",
        }
    )
    assert settings.kafka.security_protocol == "SASL_PLAINTEXT"
    assert settings.store.cluster is True


def test_env_values_that_look_like_numbers_stay_text_where_text_is_wanted() -> None:
    settings = load_settings(environ={"HOTSPOTS_STORE__NAMESPACE": "2024"})
    assert settings.store.namespace == "2024"
