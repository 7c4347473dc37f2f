"""A host FastAPI application that mounts the workspace hub (see README.md here)."""
