import pytest
from pydantic import ValidationError

from records.settings import Settings


def test_defaults_are_embedded_under_data_dir(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path / 'zscl.sqlite'}"
    assert s.broker_url == f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    assert s.versions_dir == tmp_path / "versions"
    assert s.redis_url is None and not s.distributed and s.model == "starter"


def test_environment_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("ZSCL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ZSCL_REDIS_URL", "redis://localhost:6380/0")
    monkeypatch.setenv("ZSCL_BATCH_MAX_SIZE", "8")
    s = Settings()
    assert s.distributed and s.batch_max_size == 8 and s.data_dir == tmp_path


@pytest.mark.parametrize("field, value, message", [
    ("batch_max_size", 0, "greater than 0"),
    ("device", "tpu", "ZSCL_DEVICE"),
    ("redis_url", "localhost:6379", "redis://"),
    ("admin_key", "short", "at least 8"),
    ("port", 70000, "less than or equal"),
])
def test_bad_values_fail_fast(field, value, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**{field: value})


def test_the_micro_batch_defaults_to_the_device(monkeypatch):
    monkeypatch.delenv("ZSCL_BATCH_MAX_SIZE", raising=False)
    assert Settings(device="cpu").max_batch == 8
    assert Settings(device="cuda").max_batch == 128
    assert Settings(device="cpu", batch_max_size=20).max_batch == 20
