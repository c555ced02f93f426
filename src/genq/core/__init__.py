"""genq core: job kinds, configuration, the SQL and artifact stores, and the models. No Celery here."""
