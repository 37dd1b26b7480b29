"""The HTTP service: FastAPI app factory, routes, schemas, error handlers."""
