"""The HTTP layer: routers, dependencies, middleware and the error mapping."""

API_V1 = "/v1"  # in each resource router's own prefix, so a route's path is its full template
