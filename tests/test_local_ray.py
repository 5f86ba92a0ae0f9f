"""esper.runtime.local_ray without starting a cluster: the token file is private, a local cluster's environment is
loopback + token whatever the shell says, and an attaching driver gets loopback only for loopback addresses."""

from __future__ import annotations

import logging
import stat

import pytest

from esper.runtime import local_ray


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (local_ray.TOKEN_ENV, local_ray.TOKEN_PATH_ENV, local_ray.AUTH_MODE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(local_ray.LOOPBACK_ENV, "1")  # Ray's default on Linux; restored after the test
    return tmp_path


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_missing_token_is_created_private(home):
    path = local_ray.ensure_private_token()
    assert path == home / ".ray" / "auth_token"
    assert _mode(path) == 0o600 and len(path.read_text().strip()) >= 32


def test_a_world_readable_token_is_tightened_and_kept(home, caplog):
    path = home / ".ray" / "auth_token"
    path.parent.mkdir()
    path.write_text("a-token-ray-wrote-0644")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert local_ray.ensure_private_token() == path
    assert _mode(path) == 0o600 and path.read_text() == "a-token-ray-wrote-0644"
    assert "readable by other users" in caplog.text


def test_token_from_the_environment_or_another_file(home, monkeypatch, tmp_path):
    monkeypatch.setenv(local_ray.TOKEN_ENV, "x" * 32)
    assert local_ray.ensure_private_token() is None and local_ray.token_source() == "$RAY_AUTH_TOKEN"
    monkeypatch.delenv(local_ray.TOKEN_ENV)
    monkeypatch.setenv(local_ray.TOKEN_PATH_ENV, str(tmp_path / "elsewhere"))
    assert local_ray.ensure_private_token() == tmp_path / "elsewhere" and _mode(tmp_path / "elsewhere") == 0o600


def test_an_empty_token_file_is_refused(home):
    path = home / ".ray" / "auth_token"
    path.parent.mkdir()
    path.write_text("\n")
    path.chmod(0o600)
    with pytest.raises(RuntimeError, match="empty"):
        local_ray.ensure_private_token()


def test_a_local_cluster_is_loopback_and_token_even_if_the_shell_disables_auth(home, monkeypatch, caplog):
    monkeypatch.setenv(local_ray.AUTH_MODE_ENV, "disabled")
    with caplog.at_level(logging.WARNING):
        local_ray.secure_local_environment()
    import os

    assert os.environ[local_ray.AUTH_MODE_ENV] == "token" and os.environ[local_ray.LOOPBACK_ENV] == "0"
    assert "always use token auth" in caplog.text
    assert _mode(home / ".ray" / "auth_token") == 0o600


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1:6379", True), ("localhost:1", True), ("[::1]:5", True), ("ray://127.0.0.1:10001", True),
    ("10.0.0.1:6379", False), ("192.0.2.2:6379", False), ("head.example:6379", False),
])
def test_attaching_sets_single_machine_mode_only_for_loopback(home, monkeypatch, address, loopback):
    import os

    monkeypatch.setattr(local_ray, "_single_machine_mode", lambda: os.environ.__setitem__(local_ray.LOOPBACK_ENV, "0"))
    assert local_ray.is_loopback_address(address) is loopback
    local_ray.attach_environment(address)
    assert (os.environ.get(local_ray.LOOPBACK_ENV) == "0") is loopback
