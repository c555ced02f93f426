"""genq-echo: the `echo` job kind, the example of README's "Adding a job kind" (tests install it)."""
