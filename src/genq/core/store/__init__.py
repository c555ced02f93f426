"""The SQL store (models, state machine, queries) and the on-disk artifact store."""
