"""One update job end to end, in four named steps: load, train, evaluate, decide.

Called by the Celery task (``worker.tasks``), by the product-path benchmark
(``zscl_bench.updates``) and by tests directly; it imports no queue code and no database code:
it reads and writes through ``records`` only, and keeps the order of the work. Every state
change goes through ``records.jobs`` so the API sees it at once; nothing reaches the version
store or the serving pointer unless the gate passes, and a passed candidate is promoted by one
call, ``records.registry.promote``, whose writes (version, pointer, label set, the job's final
state) commit in one transaction.

What the gate compares, for the model being served (before) and the candidate (after), on the
same images: the new dataset's test split; the test split of every task LEARNED in the served
lineage (a job whose version is the served version or one of its ancestors: after a rollback, a
task learned only on the abandoned branch is not learned any more); every zero-shot suite, on all
its images (a suite is never trained on). Datasets are keyed by id.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from records import datasets, jobs, registry
from records.datasets import DatasetInfo
from records.ingest import evaluation_images, load_dataset_dir
from records.jobs import JobState, SessionFactory
from records.label_sets import LabelSetUpdate
from records.settings import Settings
from zscl_core import (DEFAULT_TEMPLATES, GatePolicy, GateReport, LoadedModel, PairedScore,
                       ReferenceSet, StepInfo, UnlabelledImages, UpdateCancelled, UpdateConfig,
                       UpdateResult, build_head, correct, default_reference_texts, drift,
                       encode_texts, evaluate_gate, get_method, load_version, run_update,
                       save_version)
from zscl_core.reference import list_images, photo_crops

__all__ = ["JobPlan", "JobRunner", "Progress", "run_job"]

logger = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
DRIFT_IMAGES = 256
CACHED_TEACHERS = 4
PHOTO_CROPS = 1024  # reference_images="photos": distinct crops of scikit-image's sample photos
REPORT_EVERY_GPU = 10  # steps between progress reports on a GPU (each one syncs with the device)


class _Heartbeat:
    """Keeps the job's heartbeat fresh while a long step runs (the reaper's evidence of life)."""

    def __init__(self, sessions: SessionFactory, job_id: str):
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


def _label_set_of(dataset: DatasetInfo) -> LabelSetUpdate | None:
    """The label set a promoted job registers for its task: the dataset's classes under its name.
    None for a dataset built from feedback: it was built for a label set, which exists."""
    if (dataset.origin or {}).get("label_set"):
        return None
    return LabelSetUpdate(dataset.name, list(dataset.classnames), list(DEFAULT_TEMPLATES),
                          source=f"dataset:{dataset.id}")


@dataclass
class _Evaluation:
    dataset_id: str
    name: str
    kind: str  # "new_task", "learned" or "suite"
    classnames: list[str]
    images: object


@dataclass
class JobPlan:
    """Everything a job needs, read from the records and the version store by ``load``."""

    job_id: str
    base_version: str
    config: UpdateConfig
    policy: GatePolicy
    dataset: DatasetInfo
    learned: list[DatasetInfo]
    suites: list[DatasetInfo]
    teacher_version: str
    base: LoadedModel
    initial: torch.nn.Module
    references: tuple[UnlabelledImages, UnlabelledImages] | None = None  # see reference_images


class JobRunner:
    """Runs one job with the objects of one worker process."""

    def __init__(self, settings: Settings, sessions: SessionFactory, device: str = "cpu",
                 on_step: Callable[[str, StepInfo], None] | None = None):
        self.settings = settings
        self.sessions = sessions
        self.device = device
        self.on_step = on_step  # called with (job id, step info) after each recorded step
        # Versions never change and datasets are content-addressed, so these caches stay valid
        # for the life of the process: the served model's per-image correctness per (version,
        # dataset id), the teacher's embeddings of the reference texts per teacher version, and
        # the photo crops of reference_images="photos".
        self.scores: dict[tuple[str, str], torch.Tensor] = {}
        self.teacher_texts: dict[str, torch.Tensor] = {}
        self._photos: list | None = None

    def run(self, job_id: str) -> str:
        """Run the job if it is still queued; returns its final state."""
        with self.sessions() as session:
            base_version, _ = registry.get_serving(session)
            if base_version is None:
                jobs.transition(session, job_id, JobState.FAILED,
                                error={"type": "NoServedModel",
                                       "message": "no model is served yet; start the API first"})
                return JobState.FAILED
            if not jobs.transition(session, job_id, JobState.RUNNING, base_version=base_version):
                state = jobs.get_job(session, job_id).state
                logger.info("job %s is %s, not queued: skipping", job_id, state)
                return state
        try:
            with _Heartbeat(self.sessions, job_id):
                return self.run_steps(job_id, base_version)
        except UpdateCancelled as exc:
            with self.sessions() as session:
                jobs.transition(session, job_id, JobState.CANCELLED,
                                metrics={"cancelled_at_step": exc.step})
            return JobState.CANCELLED
        except Exception as exc:  # noqa: BLE001 - any failure must end the job, with its reason
            logger.exception("job %s failed", job_id)
            with self.sessions() as session:
                jobs.transition(session, job_id, JobState.FAILED,
                                error={"type": type(exc).__name__, "message": str(exc)})
            return JobState.FAILED

    def run_steps(self, job_id: str, base_version: str) -> str:
        """load -> train -> evaluate -> decide, for a job already marked running."""
        plan = self.load(job_id, base_version)
        progress = Progress(self.sessions, job_id, plan.config.steps, on_step=self.on_step)
        started = time.monotonic()
        result = self.train(plan, progress)
        train_s = time.monotonic() - started
        with self.sessions() as session:
            jobs.transition(session, job_id, JobState.EVALUATING)
        candidate = copy.deepcopy(plan.base.model)
        candidate.load_state_dict(result.state_dict)
        candidate.eval()
        started = time.monotonic()
        report, metrics, candidate_scores = self.evaluate(plan, candidate, progress)
        metrics.update({"snapshots": result.snapshots, "last_losses": result.last_losses,
                        "train_s": round(train_s, 2),
                        "s_per_step": round(train_s / max(1, result.steps), 4),
                        "data_wait_s": round(result.data_wait_s, 2),
                        "compute_s": round(result.compute_s, 2),
                        "evaluate_s": round(time.monotonic() - started, 2)})
        state, version_id = self.decide(plan, candidate, report, metrics)
        if version_id is not None:  # saved: its scores are the served scores of a later job
            self.scores.update({(version_id, d): v for d, v in candidate_scores.items()})
        return state

    # -- the steps -------------------------------------------------------------------------
    def load(self, job_id: str, base_version: str) -> JobPlan:
        """Read the job, its dataset, the tasks learned in the served lineage and the suites;
        load the served model and the original model (ZSCL's teacher)."""
        with self.sessions() as session:
            job = jobs.get_job(session, job_id)
            dataset = datasets.dataset_info(session, job.dataset_id)
            lineage = registry.lineage(session, base_version)
            learned = [d for d in datasets.learned_in(session, [v.id for v in lineage])
                       if d.id != dataset.id]
            learned_ids = {d.id for d in learned}
            suites = [d for d in datasets.list_suites(session)
                      if d.id != dataset.id and d.id not in learned_ids]
            config = UpdateConfig.from_dict({**job.hparams, "method": job.method})
            policy = GatePolicy(**job.gate)
            base_path, root_id, root_path = lineage[0].path, lineage[-1].id, lineage[-1].path
        base = load_version(base_path, device=self.device)
        initial = (load_version(root_path, device=self.device).model if root_id != base_version
                   else copy.deepcopy(base.model))
        return JobPlan(job_id, base_version, config, policy, dataset, learned, suites, root_id,
                       base, initial)

    def train(self, plan: JobPlan, progress: Progress) -> UpdateResult:
        """Run the update (``zscl_core.run_update``) on the dataset's train split."""
        base, config = plan.base, plan.config
        train, _ = load_dataset_dir(plan.dataset.path)
        train = train.with_transform(base.preprocess_train)
        distil_images, _ = self.reference_images(plan)
        texts = default_reference_texts()
        method = get_method(config.method)
        text_features = None
        if method.needs_reference:
            teacher_id = plan.teacher_version if method.teacher == "initial" else plan.base_version
            teacher = plan.initial if method.teacher == "initial" else base.model
            text_features = self._teacher_texts(teacher_id, teacher, base.tokenizer, texts)
        return run_update(base.model, base.tokenizer, train, list(train.classnames), config=config,
                          initial=plan.initial,
                          reference=ReferenceSet(distil_images, texts, text_features),
                          template=DEFAULT_TEMPLATES[0], device=self.device,
                          num_workers=self.settings.loader_workers,
                          # on a GPU, reading the losses back every step would stall its queue
                          report_every=1 if self.device == "cpu" else REPORT_EVERY_GPU,
                          on_step=progress, should_cancel=progress.cancel_requested)

    def evaluate(self, plan: JobPlan, candidate, progress: Progress
                 ) -> tuple[GateReport, dict, dict[str, torch.Tensor]]:
        """Score the served model and the candidate on every gate dataset; apply the gate.

        Returns the gate's report, the job's metrics and the candidate's per-image correctness
        by dataset id. A cancel request is honoured between datasets.
        """
        base = plan.base
        evaluations = ([self._evaluation(plan.dataset, "new_task", base)]
                       + [self._evaluation(d, "learned", base) for d in plan.learned]
                       + [self._evaluation(d, "suite", base) for d in plan.suites])
        scores, candidate_scores = [], {}
        for evaluation in evaluations:
            if progress.cancel_requested():
                raise UpdateCancelled(plan.config.steps)
            before = self._served_correct(plan.base_version, base, evaluation)
            after = self.score(base, candidate, evaluation)
            candidate_scores[evaluation.dataset_id] = after
            scores.append(PairedScore.from_correct(evaluation.dataset_id, evaluation.name,
                                                   evaluation.kind, before, after))
        _, drift_images = self.reference_images(plan)
        drift_value = drift(candidate, base.model, base.tokenizer, drift_images,
                            default_reference_texts(), temperature=plan.config.temperature,
                            device=self.device)
        report = evaluate_gate(scores[0], scores[1:], plan.policy, drift_value)
        metrics = {"new_task_before": scores[0].before, "new_task_after": scores[0].after,
                   "new_task_margin": report.rows[0]["margin"], "mean_drop": report.mean_drop,
                   "drift": drift_value}
        return report, metrics, candidate_scores

    def reference_images(self, plan: JobPlan) -> tuple[UnlabelledImages, UnlabelledImages]:
        """(images to distil on, held-out images for the drift measure), never a test split.

        From ``settings.reference_dir`` when set; otherwise by ``settings.reference_images``:
        the train images of the job's dataset and the learned ones ("task"), crops of the photos
        scikit-image ships ("photos"), or both. Listed once per job (kept on the plan).
        """
        if plan.references is None:
            plan.references = self._list_references(plan)
        return plan.references

    def _list_references(self, plan: JobPlan) -> tuple[UnlabelledImages, UnlabelledImages]:
        settings = self.settings
        if settings.reference_dir:
            items: list = list_images(settings.reference_dir)
        else:
            items = []
            if settings.reference_images in ("task", "both"):
                items += list_images(*(Path(d.path) / "train"
                                       for d in [plan.dataset, *plan.learned]))
            if settings.reference_images in ("photos", "both"):
                if self._photos is None:
                    self._photos = photo_crops(PHOTO_CROPS, seed=0)
                items += self._photos
        order = list(range(len(items)))
        random.Random(plan.config.seed).shuffle(order)
        held = min(DRIFT_IMAGES, max(1, len(items) // 5))
        distil = [items[i] for i in order[held:]] or items
        transform = plan.base.preprocess_val
        return (UnlabelledImages(distil, transform),
                UnlabelledImages([items[i] for i in order[:held]], transform))

    def decide(self, plan: JobPlan, candidate, report: GateReport, metrics: dict
               ) -> tuple[str, str | None]:
        """Reject the candidate, or save it and promote it (``records.registry.promote``: one
        transaction), then tell the API processes; returns the job's state and the saved
        version."""
        job_id = plan.job_id
        with self.sessions() as session:
            if jobs.get_job(session, job_id).cancel_requested:
                jobs.transition(session, job_id, JobState.CANCELLED, metrics=metrics,
                                report=report.to_dict())
                return JobState.CANCELLED, None
            if not report.passed:
                jobs.transition(session, job_id, JobState.REJECTED, metrics=metrics,
                                report=report.to_dict())
                return JobState.REJECTED, None
        # the files first, published by one rename: a crash before the promotion commits leaves
        # a version that no row names, registered (not served) when the API next starts
        version_id = save_version(self.settings.versions_dir, candidate, plan.base.spec,
                                  parent=plan.base_version,
                                  metadata={"method": plan.config.method, "job_id": job_id,
                                            "dataset": plan.dataset.name, "metrics": metrics})
        with self.sessions() as session:
            promotion = registry.promote(session, job_id, version_id,
                                         self.settings.versions_dir / version_id,
                                         parent=plan.base_version, metrics=metrics,
                                         report=report.to_dict(),
                                         label_set=_label_set_of(plan.dataset))
        if promotion.promoted:  # after the commit: a receiver reads the pointer it is told of
            registry.notify(self.settings.redis_url, version_id, promotion.generation)
        return promotion.job_state, version_id

    @staticmethod
    def _evaluation(dataset: DatasetInfo, kind: str, base: LoadedModel) -> _Evaluation:
        images = evaluation_images(Path(dataset.path), suite=kind == "suite",
                                   transform=base.preprocess_val)
        return _Evaluation(dataset.id, dataset.name, kind, list(images.classnames), images)

    def _served_correct(self, version: str, base: LoadedModel, evaluation: _Evaluation
                        ) -> torch.Tensor:
        key = (version, evaluation.dataset_id)
        if key not in self.scores:
            self.scores[key] = self.score(base, base.model, evaluation)
        return self.scores[key]

    def _teacher_texts(self, teacher_id: str, teacher, tokenizer, texts) -> torch.Tensor:
        key = f"{teacher_id}:{hash(tuple(texts))}"
        if key not in self.teacher_texts:
            if len(self.teacher_texts) >= CACHED_TEACHERS:
                self.teacher_texts.pop(next(iter(self.teacher_texts)))
            self.teacher_texts[key] = encode_texts(teacher, tokenizer, texts,
                                                   device=self.device).cpu()
        return self.teacher_texts[key]

    def score(self, base: LoadedModel, model, evaluation: _Evaluation) -> torch.Tensor:
        """Per-image correctness of ``model`` on one gate dataset (base gives the tokenizer)."""
        head = build_head(model, base.tokenizer, evaluation.classnames, DEFAULT_TEMPLATES,
                          device=self.device)
        return correct(model, head, evaluation.images, device=self.device)


class Progress:
    """run_update's on_step: throttled progress rows and events, ETA, and the cancel flag;
    then the runner's own ``on_step`` hook, if any."""

    def __init__(self, sessions: SessionFactory, job_id: str, total: int,
                 min_interval_s: float = 0.5,
                 on_step: Callable[[str, StepInfo], None] | None = None):
        self.sessions, self.job_id, self.total = sessions, job_id, total
        self.hook = on_step
        self.min_interval_s = min_interval_s
        self.started = time.monotonic()
        self.last_write = 0.0
        self.event_every = max(1, total // 50)
        self.cancelled = False

    def __call__(self, info: StepInfo) -> None:
        self._record(info)
        if self.hook is not None:
            self.hook(self.job_id, info)

    def _record(self, info: StepInfo) -> None:
        now = time.monotonic()
        if info.step != info.total and now - self.last_write < self.min_interval_s \
                and info.step % self.event_every:
            return
        self.last_write = now
        elapsed = now - self.started
        eta = elapsed / info.step * (info.total - info.step)
        # 4 significant digits, not 5 decimals: an l2 term near 1e-5 kept its curve, not steps
        with self.sessions() as session:
            self.cancelled = jobs.record_progress(
                session, self.job_id, step=info.step, total=info.total,
                losses={k: float(f"{v:.4g}") for k, v in info.losses.items()}, eta_s=round(eta, 1),
                event=info.step % self.event_every == 0 or info.step == info.total)

    def cancel_requested(self) -> bool:
        if not self.cancelled:
            with self.sessions() as session:
                self.cancelled = jobs.get_job(session, self.job_id).cancel_requested
        return self.cancelled


def run_job(job_id: str, settings: Settings, sessions: SessionFactory,
            device: str | None = None) -> str:
    """Run one job (convenience for tests and the task)."""
    return JobRunner(settings, sessions, device or settings.torch_device).run(job_id)
