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


def test_cors_for_any_site_needs_keys() -> None:
    """Without keys, `*` let any site a local user visits read the library."""
    with pytest.raises(SettingsError, match="MMV_CORS_ORIGINS=\\* lets a page of any site"):
        Settings(cors_origins="*").check()
    Settings(cors_origins="*", api_keys="k:read").check()
    Settings(cors_origins="http://localhost:3000").check()  # a local front end, named


@pytest.mark.parametrize("keys", ["nokey", "k:admin", ":read", "k:"])
def test_malformed_keys_are_refused(keys: str) -> None:
    with pytest.raises(SettingsError, match="KEY:read or KEY:write"):
        Settings(api_keys=keys).check()


@pytest.mark.parametrize(
    ("keys", "said"),
    [
        ("supersecret", "entry 1 of 1 does not end in :read or :write"),
        ("a:read,b:read,supersecret", "entry 3 of 3 does not end"),
        ("k:read,k:write", "entry 2 of 2 repeats an earlier entry's key"),
        ("clé:write", "entry 1 of 1 has a character that is not printable ASCII"),
        ("ends in a space :write", "spaces at an end"),
    ],
)
def test_a_bad_key_entry_is_named_by_its_place_never_by_its_characters(
    keys: str, said: str
) -> None:
    """A key with `:write` forgotten was quoted by its last 6 characters, in the log; a
    repeated key took the last scope silently; a non-ASCII key could never match."""
    with pytest.raises(SettingsError, match=said) as refused:
        Settings(api_keys=keys).check()
    assert "secret" not in str(refused.value)
    assert Settings(api_keys="two words:write").keys == {"two words": "write"}  # as before


@pytest.mark.parametrize(
    "variable", ["MMV_MAX_UPLOAD_MB", "MMV_MIN_FREE_DISK_MB", "MMV_SHUTDOWN_TIMEOUT_S",
                 "MMV_FFMPEG_CPU_S", "MMV_SEARCH_BATCH_MS"],
)  # fmt: skip
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_endless_numbers_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """`inf` passed every bound: every upload then answered 500 (MMV_MAX_UPLOAD_MB),
    start-up ended in a traceback (MMV_SHUTDOWN_TIMEOUT_S), every decode failed
    (MMV_FFMPEG_CPU_S), or searches waited forever (MMV_SEARCH_BATCH_MS)."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=r"finite number|less than or equal"):
        Settings()
