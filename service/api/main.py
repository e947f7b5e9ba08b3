"""The versioned API router: one router per resource."""

from fastapi import APIRouter

from .routes import classify, datasets, embeddings, feedback, health, jobs, label_sets, models, ui

api_router = APIRouter()
api_router.include_router(classify.router)
api_router.include_router(embeddings.router)
api_router.include_router(label_sets.router)
api_router.include_router(models.router)
api_router.include_router(feedback.router)  # before datasets: it owns /datasets/from-feedback
api_router.include_router(datasets.router)
api_router.include_router(jobs.router)
api_router.include_router(ui.router)  # the dashboard at /ui/

health_router = health.router

#: routes that opted out of the request-body cap (see ``ServiceMiddleware``)
UNCAPPED_ROUTES = datasets.UNCAPPED
