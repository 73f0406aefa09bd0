"""HTTPS from the server itself (IMPROV_TLS_CERT / IMPROV_TLS_KEY, `serve --tls-cert --tls-key`):
both or neither, files that can work or a plain one-line reason at start, https links by
default, and a cluster's workers on plain HTTP. A performer's page over it, in Chromium on a
test host: tests/network/test_https_network_check.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from improv_capture.api.http_server import server_config, tls_files
from improv_capture.cli import main
from improv_capture.settings import Settings
from tests.turn import self_signed_cert

pytestmark = pytest.mark.unit


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_cert("127.0.0.1", tmp_path / "tls")


def refusal(settings: Settings) -> str:
    with pytest.raises(SystemExit) as stopped:
        tls_files(settings)
    return str(stopped.value.code)


def test_a_certificate_and_its_key_serve_https_and_make_https_links(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    cert, key = pair
    settings = Settings(data_dir=tmp_path, host="127.0.0.1", port=8443, tls_cert=cert,
                        tls_key=key)
    assert tls_files(settings) == (cert, key)
    assert settings.base_url == "https://127.0.0.1:8443"  # invites and the console link
    config = server_config(lambda *_: None, settings)  # type: ignore[arg-type,return-value]
    assert (config.ssl_certfile, config.ssl_keyfile) == (cert, key)
    # an explicit public URL (a proxy's name) still wins; without TLS, http
    assert Settings(data_dir=tmp_path, tls_cert=cert, tls_key=key,
                    public_url="https://stage.example/").base_url == "https://stage.example"
    plain = Settings(data_dir=tmp_path, port=8000)
    assert tls_files(plain) is None and plain.base_url == "http://127.0.0.1:8000"
    assert server_config(lambda *_: None, plain).ssl_certfile is None  # type: ignore[arg-type]


def test_a_cluster_worker_stays_on_plain_http(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    """The router listens for browsers with TLS; its workers (which inherit its environment)
    listen on loopback for the router alone."""
    cert, key = pair
    worker = Settings(data_dir=tmp_path, tls_cert=cert, tls_key=key, worker_index=1,
                      primary_url="http://127.0.0.1:9")
    assert tls_files(worker) is None


def test_one_without_the_other_is_refused(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, key = pair
    message = refusal(Settings(data_dir=tmp_path, tls_cert=cert))
    assert "IMPROV_TLS_CERT is set but IMPROV_TLS_KEY is not" in message, message
    message = refusal(Settings(data_dir=tmp_path, tls_key=key))
    assert "IMPROV_TLS_KEY is set but IMPROV_TLS_CERT is not" in message, message


def test_files_that_cannot_work_are_named(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, key = pair
    missing = tmp_path / "nowhere" / "privkey.pem"
    message = refusal(Settings(data_dir=tmp_path, tls_cert=cert, tls_key=missing))
    assert f"cannot read IMPROV_TLS_KEY {missing}" in message, message
    message = refusal(Settings(data_dir=tmp_path, tls_cert=tmp_path, tls_key=key))  # a dir
    assert f"cannot read IMPROV_TLS_CERT {tmp_path}" in message, message
    # a key that is not the certificate's, a certificate that is not PEM, and an encrypted
    # key (refused rather than asked for a passphrase on the terminal)
    _, other_key = self_signed_cert("127.0.0.1", tmp_path / "other")
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(serialization.load_pem_private_key(key.read_bytes(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    for wrong_cert, wrong_key in ((cert, other_key), (key, key), (cert, encrypted)):
        message = refusal(Settings(data_dir=tmp_path, tls_cert=wrong_cert, tls_key=wrong_key))
        assert "cannot be used" in message and "fullchain.pem" in message, message


def test_serve_stops_before_anything_starts_and_says_why(
    tmp_path: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cert, _ = pair
    data = tmp_path / "data"
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--data-dir", str(data), "--tls-cert", str(cert)])
    assert "set both (--tls-cert, --tls-key)" in str(stopped.value.code)
    assert not data.exists()  # no data dir, no tokens, no banner
    assert "serving on" not in capsys.readouterr().out
