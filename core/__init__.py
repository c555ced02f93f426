"""genq core: job specs, configuration, the SQL and artifact stores, and the models. No Celery here."""
