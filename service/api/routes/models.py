"""Model versions: list, inspect, and activate (promote or roll back; admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from records import registry
from records.tables import ModelVersion

from ...schemas import ActivateOut, ModelOut, ModelsOut
from .. import API_V1
from ..deps import READ_ACCESS, ServicesDep, SessionDep, require_admin

router = APIRouter(prefix=f"{API_V1}/models", tags=["models"])


def _lineage(version: ModelVersion, by_id: dict[str, ModelVersion]) -> list[str]:
    chain, parent, seen = [], version.parent, {version.id}
    while parent and parent not in seen:
        chain.append(parent)
        seen.add(parent)
        parent = by_id[parent].parent if parent in by_id else None
    return chain


def _out(version: ModelVersion, serving: str | None, by_id: dict[str, ModelVersion]) -> ModelOut:
    return ModelOut(id=version.id, parent=version.parent, created_at=version.created_at,
                    source=version.source, method=version.method, metrics=version.metrics or {},
                    report=version.report or {}, serving=version.id == serving,
                    lineage=_lineage(version, by_id))


@router.get("", dependencies=READ_ACCESS,
            response_model=ModelsOut, summary="Every version, its lineage and metrics")
def list_models(session: SessionDep, services: ServicesDep) -> ModelsOut:
    """List every model version with its lineage and metrics, and which one is served."""
    versions = registry.list_registered(session)
    serving, generation = registry.get_serving(session)
    by_id = {v.id: v for v in versions}
    loaded = services.holder.current
    return ModelsOut(serving=serving, generation=generation,
                     loaded=loaded.version if loaded else None,
                     versions=[_out(v, serving, by_id) for v in versions])


@router.get("/{version_id}", dependencies=READ_ACCESS,
            response_model=ModelOut, summary="One version")
def get_model(version_id: str, session: SessionDep) -> ModelOut:
    """Show one model version: its lineage, method, metrics and gate report."""
    version = registry.get_version(session, version_id)
    serving, _ = registry.get_serving(session)
    by_id = {v.id: v for v in registry.list_registered(session)}
    return _out(version, serving, by_id)


@router.post("/{version_id}/activate", response_model=ActivateOut,
             dependencies=[Depends(require_admin)],
             summary="Serve this version (promote or roll back)",
             description="Loads and warms the version first: one that cannot be loaded is refused "
                         "(409) and nothing changes. Other API processes follow within their "
                         "reconcile interval, or at once over Redis in distributed mode.")
async def activate(version_id: str, services: ServicesDep) -> ActivateOut:
    """Serve another version: promote a candidate or roll back to an earlier one."""
    served, generation, previous = await services.holder.activate(version_id)
    notified = await run_in_threadpool(registry.notify, services.settings.redis_url,
                                       served.version, generation)
    return ActivateOut(version=served.version, previous=previous, generation=generation,
                       notified=notified)
