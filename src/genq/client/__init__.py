"""The click CLI (`client`)."""
