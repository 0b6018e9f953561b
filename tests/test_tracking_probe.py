"""The tracking store probe: a store that cannot be written is found before the run, not after ~100 s of MLflow retries."""

import os
from pathlib import Path

from runner import tracking
from runner.schema import TrackingConfig


def probe(uri: str, outputs_root: Path = Path("outputs")):
    return tracking.probe(TrackingConfig(uri=uri), outputs_root)


def test_a_sqlite_store_where_nothing_can_be_created_is_caught():
    # Seen: root "may write" /proc by os.access, so the old probe passed and MLflow retried ~100 s.
    found = probe("sqlite:////proc/nope.db")
    assert found and found.startswith("tracking.uri=sqlite:////proc/nope.db: cannot write the store's database /proc/nope.db")
    assert "Fix: tracking.uri=sqlite:///<a writable path>.db" in found and "tracking=off" in found


def test_a_folder_that_is_a_file_is_caught_and_nothing_is_left(tmp_path):
    (tmp_path / "plain").write_text("not a folder")
    found = probe(f"sqlite:///{tmp_path}/plain/sub/mlflow.db")
    assert found and "Fix:" in found
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_a_database_that_is_a_folder_is_caught(tmp_path):
    (tmp_path / "mlflow.db").mkdir()
    assert "cannot write" in probe(f"sqlite:///{tmp_path}/mlflow.db")


def test_a_writable_store_passes_and_the_probe_leaves_nothing_behind(tmp_path):
    assert probe(f"sqlite:///{tmp_path}/new/deeper/mlflow.db") is None
    assert list(tmp_path.iterdir()) == []


def test_an_existing_database_is_opened_not_changed(tmp_path):
    database = tmp_path / "mlflow.db"
    database.write_bytes(b"SQLite format 3\x00 and more")
    os.utime(database, (1_000_000, 1_000_000))
    assert probe(f"sqlite:///{database}") is None
    assert database.read_bytes() == b"SQLite format 3\x00 and more" and database.stat().st_mtime == 1_000_000


def test_after_the_probe_the_real_store_opens_where_the_probe_cleaned_up(tmp_path):
    """The probe removes the folder it made; MLflow's own store makes it again."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    assert probe(uri, tmp_path) is None
    experiment = tracking.open_store(TrackingConfig(uri=uri, experiment="probe"), tmp_path)
    assert mlflow.get_experiment(experiment).name == "probe" and (tmp_path / "store" / "mlflow.db").is_file()
