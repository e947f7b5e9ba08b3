import pytest

from records import registry
from records.db import create_all, make_engine, make_session_factory
from records.errors import UnknownVersion


@pytest.fixture()
def session(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    create_all(engine)
    with make_session_factory(engine)() as s:
        yield s
    engine.dispose()


def test_register_is_idempotent_and_sorts_metadata(session):
    row = registry.register_version(session, "v1", "/x/v1", None,
                                    {"source": "ViT-B-16", "method": "zscl", "metrics": {"acc": 0.5},
                                     "task": "colours"})
    assert (row.source, row.method, row.metrics, row.report) == ("ViT-B-16", "zscl", {"acc": 0.5},
                                                                 {"task": "colours"})
    again = registry.register_version(session, "v1", "/elsewhere", None, {"source": "other"})
    assert again.path == "/x/v1" and again.source == "ViT-B-16"
    with pytest.raises(UnknownVersion, match="not registered"):
        registry.get_version(session, "v2")


def test_activate_is_compare_and_swap(session):
    for vid in ("v1", "v2", "v3"):
        registry.register_version(session, vid, f"/x/{vid}")
    assert registry.get_serving(session) == (None, 0)
    assert not registry.activate(session, "v1", expected_current="v0")  # nothing served: no match
    assert registry.activate(session, "v1", expected_current=None)      # first activation
    assert not registry.activate(session, "v2", expected_current=None)  # something is served now
    assert registry.get_serving(session) == ("v1", 1)
    # a worker promotes v2 trained from v1; a stale candidate trained from v1 loses the race
    assert registry.activate(session, "v2", expected_current="v1")
    assert not registry.activate(session, "v3", expected_current="v1")
    assert registry.get_serving(session) == ("v2", 2)
    # an operator's rollback is unconditional
    assert registry.activate(session, "v1")
    assert registry.get_serving(session) == ("v1", 3)
    with pytest.raises(UnknownVersion):
        registry.activate(session, "nope")


def test_activate_unconditionally_creates_the_pointer(session):
    registry.register_version(session, "v1", "/x/v1")
    assert registry.activate(session, "v1")
    assert registry.get_serving(session) == ("v1", 1)


def test_lineage_is_the_version_and_its_ancestors_newest_first(session):
    registry.register_version(session, "root", "/x/root")
    registry.register_version(session, "a", "/x/a", parent="root")
    registry.register_version(session, "b", "/x/b", parent="a")
    registry.register_version(session, "other", "/x/other", parent="root")
    assert [v.id for v in registry.lineage(session, "b")] == ["b", "a", "root"]
    assert [v.id for v in registry.lineage(session, "root")] == ["root"]
    with pytest.raises(UnknownVersion):
        registry.lineage(session, "nope")


def test_notify_without_redis_is_a_no_op():
    assert registry.notify(None, "v1", 1) is False
    # an unreachable Redis is logged, not raised: receivers reconcile
    assert registry.notify("redis://127.0.0.1:1/0", "v1", 1, timeout_s=0.2) is False


def test_register_saved_versions_scans_the_store(session, colour_versions):
    added = registry.register_saved_versions(session, colour_versions / "versions")
    assert sorted(added) == ["v-colour", "v-swapped"]
    swapped = registry.get_version(session, "v-swapped")
    assert swapped.parent == "v-colour" and swapped.method == "test-swap"
    assert registry.register_saved_versions(session, colour_versions / "versions") == []
