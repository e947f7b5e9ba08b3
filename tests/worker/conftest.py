"""Fixtures for update jobs: a served tiny model that knows colours, datasets as zip uploads."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from records import db, registry
from records.datasets import add_dataset
from records.settings import Settings
from tests.synthetic import colour_task, reference_images, stripe_task
from zscl_core import save_version

# tiny-model hyper-parameters that learn stripes in seconds (see tests/core/test_train.py)
FAST_HPARAMS = {"steps": 40, "batch_size": 16, "ref_batch_size": 16, "lr": 2e-3, "warmup_steps": 4,
                "trainable": "image", "l2_weight": 0.0, "ensemble_every": 10,
                "cancel_check_every": 1}


def zip_of(items, labels, names) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, (image, label) in enumerate(zip(items, labels)):
            png = io.BytesIO()
            image.save(png, format="PNG")
            zf.writestr(f"{names[label].replace(' ', '_')}/{i:04d}.png", png.getvalue())
    return buf.getvalue()


def stripes_zip(n=30, seed=3) -> bytes:
    return zip_of(*stripe_task(n, seed=seed))


def colours_zip(n=20, seed=7) -> bytes:
    return zip_of(*colour_task(n, seed=seed))


def write_reference_dir(path: Path, n: int = 96) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(reference_images(n, seed=9)):
        image.save(path / f"{i:04d}.png")
    return path


@pytest.fixture()
def job_env(tmp_path, pretrained_tiny):
    """(settings, sessions, served version id) with the colour-pretrained tiny model served."""
    loaded, _ = pretrained_tiny
    settings = Settings(data_dir=tmp_path / "var", model=str(tmp_path / "unused.json"),
                        reference_dir=write_reference_dir(tmp_path / "reference"),
                        job_heartbeat_timeout_s=5)
    settings.ensure_dirs()
    engine = db.make_engine(settings.database_url)
    db.create_all(engine)
    sessions = db.make_session_factory(engine)
    version = save_version(settings.versions_dir, loaded.model, loaded.spec,
                           metadata={"source": "tiny-colours"})
    with sessions() as session:
        registry.register_version(session, version, settings.versions_dir / version)
        assert registry.activate(session, version)
    yield settings, sessions, version
    engine.dispose()


def upload(settings, sessions, data: bytes, name: str, tmp_path: Path, suite: bool = False):
    path = tmp_path / f"{name}.zip"
    path.write_bytes(data)
    row, _ = add_dataset(sessions, settings, path, name=name, suite=suite,
                         content_type="application/zip", test_fraction=0.25, seed=0)
    return row
