"""Serving a model over HTTP: the stand-in server and the MLServer runtime."""
