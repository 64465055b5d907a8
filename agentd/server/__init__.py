"""The OpenAI-compatible HTTP server: FastAPI app, routes, SSE, auth, errors, metrics."""
