"""`client ui`: a server-rendered dashboard over the same store and artifact root as the CLI."""
