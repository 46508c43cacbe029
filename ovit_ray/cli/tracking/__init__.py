"""Commands around MLflow: a local tracking server, and uploading a folder's queued runs."""
