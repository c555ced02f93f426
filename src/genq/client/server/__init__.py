"""`client server`: the HTTP API (FastAPI, OpenAPI from the kinds' declarations) and the dashboard, in one process."""
