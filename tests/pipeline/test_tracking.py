"""pipeline.tracking against a real MLflow store: a grid whose experiment was deleted is refused
before any compute, saying how to restore it or delete it for good."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import tracking


def deleted(tmp_path) -> tuple[str, object, str, str]:
    """(store, client, experiment id, the refusal) of a store whose experiment 'table2' is deleted."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = tracking.open_store(uri)
    first = tracking.experiment(client, "table2")
    client.delete_experiment(first)
    with pytest.raises(tracking.TrackingError) as err:
        tracking.experiment(client, "table2")
    return uri, client, first, str(err.value)


def test_a_deleted_experiment_says_what_to_do(tmp_path):
    uri, _, first, message = deleted(tmp_path)
    assert message == (
        f"the MLflow experiment 'table2' (id {first}) of the store {uri} is deleted; restore it, in the MLflow UI or with "
        f"MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id {first}, or delete it for good (its runs too) with "
        f"mlflow gc --backend-store-uri {uri} --experiment-ids {first}; then run again"
    )


@pytest.mark.slow  # the mlflow command takes half a minute to start
def test_the_restore_command_it_gives_works(tmp_path):
    uri, client, first, message = deleted(tmp_path)
    restore = message.split(" or with ")[1].split(", or delete")[0]
    env = f"PATH={Path(sys.executable).parent}:$PATH"
    subprocess.run(f"{env} {restore}", shell=True, check=True, capture_output=True)
    assert tracking.experiment(client, "table2") == first
