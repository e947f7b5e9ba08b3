"""service: the FastAPI serving layer (zero-shot classification, model registry, hot-swap).

Entry points: :func:`service.app.create_app` (the ASGI app) and :func:`zscl_cli.main.main` (`zscl`).
"""
