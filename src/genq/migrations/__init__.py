"""Alembic environment and revisions for the genq SQL store (`client db upgrade`)."""
