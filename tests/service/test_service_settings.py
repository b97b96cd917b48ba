"""Settings from MMV_* variables: keys, the loopback rule, caps."""

from __future__ import annotations

import pytest

from service.settings import Settings, SettingsError


def test_defaults_match_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MMV_HOST", "MMV_PORT", "MMV_API_KEYS", "MMV_DATA_DIR", "MMV_MODEL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert (s.host, s.port, str(s.data_dir), s.model) == (
        "127.0.0.1",
        8000,
        "data",
        "models/default",
    )
    assert s.keys == {} and s.cors_origin_list == []
    s.check()  # loopback without keys is fine


def test_environment_with_the_mmv_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMV_API_KEYS", "r1:read, w1:write ,r:2:read")
    monkeypatch.setenv("MMV_MAX_UPLOAD_MB", "1.5")
    monkeypatch.setenv("MMV_CORS_ORIGINS", "http://a.test, http://b.test")
    s = Settings()
    assert s.keys == {"r1": "read", "w1": "write", "r:2": "read"}  # the last colon splits
    assert s.max_upload_bytes == int(1.5 * 1024 * 1024)
    assert s.cors_origin_list == ["http://a.test", "http://b.test"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.org"])
def test_other_hosts_require_keys(host: str) -> None:
    with pytest.raises(SettingsError, match="MMV_API_KEYS"):
        Settings(host=host).check()
    Settings(host=host, api_keys="k:write").check()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_need_no_keys(host: str) -> None:
    Settings(host=host).check()


@pytest.mark.parametrize("keys", ["nokey", "k:admin", ":read", "k:"])
def test_malformed_keys_are_refused(keys: str) -> None:
    with pytest.raises(SettingsError, match="KEY:read or KEY:write"):
        Settings(api_keys=keys).check()
