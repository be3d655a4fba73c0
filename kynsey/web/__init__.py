"""The HTTP layer: thin routes over the services, one error handler, the static page."""
