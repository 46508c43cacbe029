"""The MLflow server app of `ovit-ray mlflow-server`: MLflow's own, opening in its model-training view.

Why: MLflow 3.17 keeps the choice between its GenAI view (traces, judges, prompts) and its model-training
view (runs table, charts, compare) in the browser's local storage (`mlflow.workflowType_v1`, GenAI by
default) and does not reconcile it with an experiment's `mlflow.experimentKind` tag (MLflow issue 24498),
so a plain link to a sweep's experiment, opened in a fresh browser, showed the GenAI view. This app serves
MLflow's page with a line that makes the training view the default when the browser has no choice stored;
a user who switches views keeps their choice. Registered as the `mlflow.app` entry point `ovit-ray`, so
`mlflow server --app-name ovit-ray` serves it too.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TRAINING_VIEW", "create_app"]

TRAINING_VIEW = (
    '<script>try{if(!localStorage.getItem("mlflow.workflowType_v1"))'
    'localStorage.setItem("mlflow.workflowType_v1",\'"machine_learning"\')}catch(e){}</script>'
)


def _training_view(response: Any) -> Any:
    """MLflow's page (`index.html`) with the training view as the browser's default."""
    if response.mimetype == "text/html" and response.status_code == 200:
        response.direct_passthrough = False  # a file MLflow sends as it is: read it to change it
        body = response.get_data(as_text=True)
        if "<head>" in body and TRAINING_VIEW not in body:
            response.set_data(body.replace("<head>", "<head>" + TRAINING_VIEW, 1))
    return response


def create_app() -> Any:
    """MLflow's app, its page defaulting to the training view (`--auth` runs MLflow's basic-auth app
    instead: its users get the GenAI view until they switch)."""
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import create_fastapi_app

    flask_app.after_request(_training_view)
    return create_fastapi_app(flask_app)
