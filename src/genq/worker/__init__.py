"""The Celery side: the app, the one task, and the runner that adapts a job row to core."""
