"""MLflow: the client with its outbox, the tracking server, the UI renderer, kept models."""
