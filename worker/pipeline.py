"""One update job end to end: train, evaluate, gate, write the version, promote.

Called by the Celery task (``worker.tasks``), and by tests directly; it imports no queue code.
Every state change goes through ``service.jobs`` so the API sees it at once; nothing reaches the
version store or the serving pointer unless the gate passes.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service import jobs, registry
from service.db import ModelVersion
from service.ingest import load_dataset_dir
from service.jobs_db import Dataset, Job
from service.label_sets import put_label_set
from service.settings import Settings
from zscl_core import (DEFAULT_TEMPLATES, GatePolicy, LoadedModel, ReferenceSet, UnlabelledImages,
                       UpdateCancelled, UpdateConfig, accuracy, build_head, default_reference_texts,
                       drift, encode_texts, evaluate_gate, get_method, load_version, run_update,
                       save_version)
from zscl_core.reference import list_images

__all__ = ["JobRunner", "run_job"]

logger = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
DRIFT_IMAGES = 256
CACHED_TEACHERS = 4


@dataclass
class _Evaluation:
    name: str
    kind: str
    dataset_id: str
    classnames: list[str]
    test: object


class _Heartbeat:
    """Keeps the job's heartbeat fresh while a long step runs (the reaper's evidence of life)."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sessions, job_id), daemon=True)

    def _run(self, sessions, job_id):
        while not self._stop.wait(HEARTBEAT_S):
            with sessions() as session:
                jobs.heartbeat(session, job_id)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _root_version(session: Session, version_id: str) -> ModelVersion:
    """The original model of a lineage (ZSCL's teacher): follow parents to the first version."""
    row = registry.get_version(session, version_id)
    seen = {row.id}
    while row.parent:
        parent = session.get(ModelVersion, row.parent)
        if parent is None or parent.id in seen:
            break
        seen.add(parent.id)
        row = parent
    return row


def _reference_images(settings: Settings, datasets: list[Dataset], transform, seed: int
                      ) -> tuple[UnlabelledImages, UnlabelledImages]:
    """(images to distil on, held-out images for drift).

    From settings.reference_dir when set; otherwise the train images of the datasets given
    (labels ignored), so that no test split is ever used.
    """
    roots = ([Path(settings.reference_dir)] if settings.reference_dir
             else [Path(d.path) / "train" for d in datasets])
    files = list_images(*roots)
    random.Random(seed).shuffle(files)
    held = min(DRIFT_IMAGES, max(1, len(files) // 5))
    return UnlabelledImages(files[held:] or files, transform), UnlabelledImages(files[:held], transform)


class JobRunner:
    """Runs one job with the objects of one worker process."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], device: str = "cpu"):
        self.settings = settings
        self.sessions = sessions
        self.device = device
        # Versions never change and datasets are content-addressed, so both caches stay valid
        # for the life of the process: the served model's accuracy per (version, dataset), and
        # the teacher's embeddings of the reference texts per teacher version.
        self.scores: dict[tuple[str, str], float] = {}
        self.teacher_texts: dict[str, torch.Tensor] = {}

    def run(self, job_id: str) -> str:
        """Run the job if it is still queued; returns its final state."""
        with self.sessions() as session:
            base_version, _ = registry.get_serving(session)
            if base_version is None:
                jobs.transition(session, job_id, "failed",
                                error={"type": "NoServedModel",
                                       "message": "no model is served yet; start the API first"})
                return "failed"
            if not jobs.transition(session, job_id, "running", base_version=base_version):
                state = jobs.get_job(session, job_id).state
                logger.info("job %s is %s, not queued: skipping", job_id, state)
                return state
        try:
            with _Heartbeat(self.sessions, job_id):
                return self._run(job_id, base_version)
        except UpdateCancelled as exc:
            with self.sessions() as session:
                jobs.transition(session, job_id, "cancelled",
                                metrics={"cancelled_at_step": exc.step})
            return "cancelled"
        except Exception as exc:  # noqa: BLE001 - any failure must end the job, with its reason
            logger.exception("job %s failed", job_id)
            with self.sessions() as session:
                jobs.transition(session, job_id, "failed",
                                error={"type": type(exc).__name__, "message": str(exc)})
            return "failed"

    # -- the steps -------------------------------------------------------------------------
    def _run(self, job_id: str, base_version: str) -> str:
        settings, device = self.settings, self.device
        with self.sessions() as session:
            job = jobs.get_job(session, job_id)
            dataset = session.get(Dataset, job.dataset_id)
            base_row = registry.get_version(session, base_version)
            root_row = _root_version(session, base_version)
            learned = self._learned_datasets(session, exclude=dataset.id)
            suites = list(session.scalars(select(Dataset).where(Dataset.is_suite.is_(True))))
            config = UpdateConfig.from_dict({**job.hparams, "method": job.method})
            policy = GatePolicy(**job.gate)

        base = load_version(base_row.path, device=device)
        initial = load_version(root_row.path, device=device).model if root_row.id != base_row.id \
            else copy.deepcopy(base.model)
        train, test = load_dataset_dir(dataset.path)
        train = train.with_transform(base.preprocess_train)
        test = test.with_transform(base.preprocess_val)
        classnames = list(train.classnames)
        distil_images, drift_images = _reference_images(
            settings, [dataset, *learned], base.preprocess_val, config.seed)
        texts = default_reference_texts()
        method = get_method(config.method)
        text_features = None
        if method.needs_reference:
            teacher_id = root_row.id if method.teacher == "initial" else base_version
            teacher = initial if method.teacher == "initial" else base.model
            text_features = self._teacher_texts(teacher_id, teacher, base.tokenizer, texts)

        progress = _Progress(self.sessions, job_id, config.steps)
        result = run_update(base.model, base.tokenizer, train, classnames, config=config,
                            initial=initial,
                            reference=ReferenceSet(distil_images, texts, text_features),
                            template=DEFAULT_TEMPLATES[0], device=device, on_step=progress,
                            should_cancel=progress.cancel_requested)
        with self.sessions() as session:
            jobs.transition(session, job_id, "evaluating")

        candidate = copy.deepcopy(base.model)
        candidate.load_state_dict(result.state_dict)
        candidate.eval()
        evaluations = ([_Evaluation(dataset.name, "new_task", dataset.id, classnames, test)]
                       + [self._evaluation(d, "learned", base) for d in learned]
                       + [self._evaluation(d, "suite", base) for d in suites
                          if d.id != dataset.id])
        scores = {e.name: (e.kind, self._served_accuracy(base_version, base, e),
                           self._accuracy(base, candidate, e)) for e in evaluations}
        candidate_scores = {e.dataset_id: scores[e.name][2] for e in evaluations}
        _, before, after = scores.pop(dataset.name)
        drift_value = drift(candidate, base.model, base.tokenizer, drift_images, texts,
                            temperature=config.temperature, device=device)
        report = evaluate_gate((dataset.name, before, after), scores, policy, drift_value)
        metrics = {"new_task_before": before, "new_task_after": after,
                   "mean_drop": report.mean_drop, "drift": drift_value,
                   "snapshots": result.snapshots, "last_losses": result.last_losses}
        state, version_id = self._decide(job_id, base, base_version, candidate, dataset, report,
                                         metrics)
        if version_id is not None:  # saved: its scores are the served scores of a later job
            self.scores.update({(version_id, d): v for d, v in candidate_scores.items()})
        return state

    def _decide(self, job_id, base: LoadedModel, base_version, candidate, dataset, report,
                metrics) -> tuple[str, str | None]:
        """Promote or reject the candidate; returns the job's state and the saved version."""
        with self.sessions() as session:
            if jobs.get_job(session, job_id).cancel_requested:
                jobs.transition(session, job_id, "cancelled", metrics=metrics,
                                report=report.to_dict())
                return "cancelled", None
            if not report.passed:
                jobs.transition(session, job_id, "rejected", metrics=metrics,
                                report=report.to_dict())
                return "rejected", None
            job = jobs.get_job(session, job_id)
            version_id = save_version(self.settings.versions_dir, candidate, base.spec,
                                      parent=base_version,
                                      metadata={"method": job.method, "job_id": job_id,
                                                "dataset": dataset.name, "metrics": metrics})
            registry.register_version(session, version_id, self.settings.versions_dir / version_id,
                                      parent=base_version,
                                      metadata={"source": f"job:{job_id}", "method": job.method,
                                                "metrics": metrics, "report": report.to_dict()})
            if not registry.activate(session, version_id, expected_current=base_version):
                served, _ = registry.get_serving(session)
                reason = (f"the served version changed from {base_version} to {served} while this "
                          f"job ran; candidate {version_id} was saved but not promoted over it "
                          f"(POST /v1/models/{version_id}/activate to serve it anyway, or rerun)")
                jobs.transition(session, job_id, "rejected", candidate_version=version_id,
                                metrics=metrics, report={**report.to_dict(), "superseded": reason})
                return "rejected", version_id
            _, generation = registry.get_serving(session)
            registry.notify(self.settings.redis_url, version_id, generation)
            put_label_set(session, dataset.name, list(dataset.classnames),
                          list(DEFAULT_TEMPLATES), source=f"dataset:{dataset.id}")
            jobs.transition(session, job_id, "succeeded", candidate_version=version_id,
                            metrics=metrics, report=report.to_dict())
            return "succeeded", version_id

    def _learned_datasets(self, session: Session, exclude: str) -> list[Dataset]:
        ids = session.scalars(select(Job.dataset_id).where(Job.state == "succeeded").distinct())
        return [d for d in (session.get(Dataset, i) for i in ids) if d is not None and d.id != exclude]

    @staticmethod
    def _evaluation(dataset: Dataset, kind: str, base: LoadedModel) -> _Evaluation:
        _, test = load_dataset_dir(dataset.path)
        return _Evaluation(dataset.name, kind, dataset.id, list(test.classnames),
                           test.with_transform(base.preprocess_val))

    def _served_accuracy(self, version: str, base: LoadedModel, evaluation: _Evaluation) -> float:
        key = (version, evaluation.dataset_id)
        if key not in self.scores:
            self.scores[key] = self._accuracy(base, base.model, evaluation)
        return self.scores[key]

    def _teacher_texts(self, teacher_id: str, teacher, tokenizer, texts) -> torch.Tensor:
        key = f"{teacher_id}:{hash(tuple(texts))}"
        if key not in self.teacher_texts:
            if len(self.teacher_texts) >= CACHED_TEACHERS:
                self.teacher_texts.pop(next(iter(self.teacher_texts)))
            self.teacher_texts[key] = encode_texts(teacher, tokenizer, texts,
                                                   device=self.device).cpu()
        return self.teacher_texts[key]

    def _accuracy(self, base: LoadedModel, model, evaluation: _Evaluation) -> float:
        head = build_head(model, base.tokenizer, evaluation.classnames, DEFAULT_TEMPLATES,
                          device=self.device)
        return accuracy(model, head, evaluation.test, device=self.device)


class _Progress:
    """on_step hook: throttled progress rows and events, ETA, and the cancel flag."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, total: int,
                 min_interval_s: float = 0.5):
        self.sessions, self.job_id, self.total = sessions, job_id, total
        self.min_interval_s = min_interval_s
        self.started = time.monotonic()
        self.last_write = 0.0
        self.event_every = max(1, total // 50)
        self.cancelled = False

    def __call__(self, info) -> None:
        now = time.monotonic()
        if info.step != info.total and now - self.last_write < self.min_interval_s \
                and info.step % self.event_every:
            return
        self.last_write = now
        elapsed = now - self.started
        eta = elapsed / info.step * (info.total - info.step)
        with self.sessions() as session:
            self.cancelled = jobs.record_progress(
                session, self.job_id, step=info.step, total=info.total,
                losses={k: round(v, 5) for k, v in info.losses.items()}, eta_s=round(eta, 1),
                event=info.step % self.event_every == 0 or info.step == info.total)

    def cancel_requested(self) -> bool:
        if not self.cancelled:
            with self.sessions() as session:
                self.cancelled = jobs.get_job(session, self.job_id).cancel_requested
        return self.cancelled


def run_job(job_id: str, settings: Settings, sessions: sessionmaker[Session],
            device: str | None = None) -> str:
    """Run one job (convenience for tests and the task)."""
    return JobRunner(settings, sessions, device or settings.torch_device).run(job_id)
