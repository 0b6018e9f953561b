"""Run state without Ray: the manifest's guards, finished ids from the files, accounting passes."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner import accounting, run_state, storage

CONFIG = {
    "model": {"name": "m"}, "engine": {"max_num_seqs": 8, "dtype": "auto"}, "prompt": {"temperature": 0.3},
    "processor": {"batch_size": 16}, "tracking": {"enabled": True}, "dataset": {"limit": None}, "output": {"format": "parquet"},
}
INPUT = {"files": [{"path": "a.jsonl", "size": 10, "mtime": 1.0}], "limit": None}


def manifest():
    return run_state.Manifest(config=json.loads(json.dumps(CONFIG)), input=json.loads(json.dumps(INPUT)), id_column="id")


def edited(**changes):
    config = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        config[section][key] = value
    return config


# Config fingerprints as runs saved them before app.run took runner.schema's dataclasses
# (computed from config.to_dict of the composed DictConfig at 0db2320). The plain data a run
# saves is now made from the dataclasses (config.to_dict of config.to_object); it must be the
# same to the byte, or a run started before would read as changed when resumed. A change to
# conf/ or to the schema's defaults changes these on purpose: update them then, not otherwise.
# The second value is the fingerprint since the `log` section (log.verbose) was added, the third
# since tracking.compare_metric was: without the newer settings a run's config must still give
# the older values.
EARLIER_FINGERPRINTS = [
    ((), '0e03448614a51694', '4ef4bef63cc40a16', 'ca6de1f892356b1f'),
    (('prompt=extract',), '1ac67212954fa0a4', '54b6ae2f5e8e5e0c', 'c18f84ab4926140f'),
    (('prompt=classify',), 'a4b1fc1289ec0369', '4f52123633cda1a2', '3c163ec73df773c6'),
    (('model=llama31_8b', 'hw=l4', 'engine=throughput'), 'cd75663489acb4d5', '4ac599b63540f443', '86a032412fefa5b6'),
    (('dataset=synthetic', 'tracking=off'), 'd061d554fc3a1fd8', 'b48b5dd2ff1c5a73', '64893ae1a0785a35'),
    (('dataset=csv',), 'f4a68faed41e0f04', '14616f98e6e5dec0', '677d6fe143bb3d20'),
    (('+engine.extra.foo=1', '+hw.env.HF_TOKEN=abc', 'dataset.limit=5', 'prompt.temperature=0'), 'a890335d8f875d60', '00db4c33a59c5719', '1690cf951a2e820b'),
]


@pytest.mark.parametrize(
    "overrides, before_log_section, before_compare_metric, expected", EARLIER_FINGERPRINTS,
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else v,
)
def test_a_runs_config_fingerprint_is_what_earlier_runs_saved(overrides, before_log_section, before_compare_metric, expected, monkeypatch, tmp_path):
    import yaml

    from runner import app, redaction
    from runner.config import compose, to_dict, to_object

    for name in redaction.TOKEN_ENV_VARS:  # a secret's value is masked wherever it occurs
        monkeypatch.delenv(name, raising=False)

    class Input:
        def fingerprint(self):
            return {}

    cfg = compose(list(overrides))
    location = storage.resolve(str(tmp_path / "run"))
    app._open_run_state(to_object(cfg), location, Input(), None, resume=False, force=False)
    saved = run_state.load(location)
    assert saved.config_fingerprint == expected
    before = {**saved.config, "tracking": {k: v for k, v in saved.config["tracking"].items() if k != "compare_metric"}}
    assert run_state.fingerprint(before) == before_compare_metric
    assert run_state.fingerprint({k: v for k, v in before.items() if k != "log"}) == before_log_section
    assert json.loads(location.child(run_state.MANIFEST).read_text())["config_fingerprint"] == expected
    # config.yaml: the same plain data, in the same key order, as the DictConfig gave
    assert location.child(run_state.CONFIG).read_text() == yaml.safe_dump(redaction.redact(to_dict(cfg)), sort_keys=False)


def test_manifest_round_trips_and_is_written_whole(tmp_path):
    where = storage.resolve(str(tmp_path / "run"))
    run_state.save(where, manifest())
    loaded = run_state.load(where)
    assert loaded.config == CONFIG and loaded.status == run_state.RUNNING
    assert json.loads((tmp_path / "run/manifest.json").read_text())["config_fingerprint"] == manifest().config_fingerprint
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["manifest.json"]  # no staging file left


def test_an_unchanged_run_resumes():
    assert run_state.check_resumable(manifest(), CONFIG, INPUT, force=False, where="r") == []


@pytest.mark.parametrize("change", [{"prompt__temperature": 0.7}, {"output__format": "jsonl"}, {"dataset__limit": 20}, {"model__name": "x"}])
def test_a_change_that_alters_outputs_is_refused_even_with_force(change):
    with pytest.raises(run_state.ResumeError, match=list(change)[0].replace("__", ".")):
        run_state.check_resumable(manifest(), edited(**change), INPUT, force=True, where="r")


def test_a_scheduling_change_needs_force_and_is_then_accepted():
    config = edited(processor__batch_size=64, engine__max_num_seqs=4)
    with pytest.raises(run_state.ResumeError, match="--force"):
        run_state.check_resumable(manifest(), config, INPUT, force=False, where="r")
    accepted = run_state.check_resumable(manifest(), config, INPUT, force=True, where="r")
    assert any("processor.batch_size" in c for c in accepted) and any("engine.max_num_seqs" in c for c in accepted)


def test_changed_input_is_refused_naming_the_file():
    changed = {"files": [{"path": "a.jsonl", "size": 11, "mtime": 2.0}, {"path": "b.jsonl", "size": 1, "mtime": 1.0}], "limit": None}
    with pytest.raises(run_state.ResumeError, match=r"a\.jsonl changed .*b\.jsonl is new"):
        run_state.check_resumable(manifest(), CONFIG, changed, force=True, where="r")


def rows(ids, error=""):
    return pa.Table.from_pylist([{"id": i, "generated_text": f"text {i}", "error": error} for i in ids])


def test_finished_ids_come_from_readable_files_and_a_torn_file_is_kept_aside(tmp_path):
    where = storage.resolve(str(tmp_path))
    results = tmp_path / "results"
    results.mkdir()
    pq.write_table(rows(["a", "b"]), results / "one.parquet")
    # Results written as JSON lines read by their name, whatever the config says now.
    (results / "two.json").write_text(json.dumps({"id": "c", "generated_text": "t", "error": ""}) + "\n")
    whole = (results / "one.parquet").read_bytes()
    (results / "torn.parquet").write_bytes(whole[: len(whole) // 2])  # a writer killed mid-file
    assert run_state.finished_ids(where, "id") == {"a", "b", "c"}
    assert not (results / "torn.parquet").exists()
    assert (results / "_unreadable" / "torn.parquet").read_bytes() == whole[: len(whole) // 2]
    assert (results / "one.parquet").exists() and (results / "two.json").exists()


def read_ids(folder):
    found = []
    for path in sorted(folder.glob("*")):
        if path.suffix == ".parquet":
            found += pq.read_table(path)["id"].to_pylist()
        elif path.suffix == ".jsonl":
            found += [json.loads(line)["id"] for line in path.read_text().splitlines()]
    return found


def test_settle_moves_failed_rows_once_drops_repeats_and_is_idempotent(tmp_path):
    where = storage.resolve(str(tmp_path))
    results = tmp_path / "results"
    results.mkdir()
    pq.write_table(pa.concat_tables([rows(["a", "b"]), rows(["x"], error="bad row")]), results / "one.parquet")
    pq.write_table(rows(["b", "c"]), results / "two.parquet")  # "b" again: a retried write
    first = accounting.settle(where, "id", rows_in=4)
    assert (first.rows_ok, first.rows_failed, first.duplicate_rows, first.balanced) == (3, 1, 0, True)
    assert sorted(read_ids(results)) == ["a", "b", "c"] and read_ids(tmp_path / "failed") == ["x"]
    again = accounting.settle(where, "id", rows_in=4)
    assert again == first and sorted(read_ids(results)) == ["a", "b", "c"]


def test_settle_finishes_a_pass_killed_between_its_two_writes(tmp_path):
    where = storage.resolve(str(tmp_path))
    (tmp_path / "results").mkdir()
    table = pa.concat_tables([rows(["a"]), rows(["x"], error="bad row")])
    pq.write_table(table, tmp_path / "results/one.parquet")
    # The failed file was written, the results file not yet rewritten: "x" is in both.
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed/one.jsonl").write_text(json.dumps({"id": "x", "error": "bad row", "generated_text": ""}) + "\n")
    counts = accounting.settle(where, "id", rows_in=2)
    assert (counts.rows_ok, counts.rows_failed, counts.balanced) == (1, 1, True)
    assert read_ids(tmp_path / "results") == ["a"]


def test_settle_on_s3(s3, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    bucket = s3.create_bucket("settle-test")[len("s3://"):]
    where = storage.resolve(f"s3://{bucket}/run")
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.concat_tables([rows(["a", "b"]), rows(["x"], error="bad")]), buffer)
    where.child("results", "one.parquet").write_bytes(buffer.getvalue().to_pybytes())
    counts = accounting.settle(where, "id", rows_in=3)
    assert (counts.rows_ok, counts.rows_failed, counts.balanced) == (2, 1, True)
    assert run_state.finished_ids(where, "id") == {"a", "b", "x"}


def test_checks_name_a_bucket_that_cannot_be_read_or_written_before_anything_starts(s3, monkeypatch):
    from runner import preflight
    from runner.config import compose, to_object

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    config = to_object(compose(["dataset=jsonl", "dataset.path=s3://no-such-input/articles.jsonl"]))
    with pytest.raises(preflight.PreflightError) as refused:
        preflight.run_checks(config, storage.resolve("s3://no-such-output/runs/r1"))
    problems = refused.value.problems
    assert any(p.startswith("output.uri: s3://no-such-output/runs/r1 is not writable") and "Fix:" in p for p in problems), problems
    assert any("dataset.path='s3://no-such-input/articles.jsonl'" in p and "Fix:" in p for p in problems), problems
    # A bucket that exists passes, and the probe leaves no file behind (pyarrow keeps an
    # empty "folder" marker where it deleted the last object under a prefix).
    bucket = s3.create_bucket("probe-ok")
    assert preflight.check_run_location(storage.resolve(f"{bucket}/runs/r1"), resume=False) == []
    left = s3.client().list_objects_v2(Bucket="probe-ok").get("Contents", [])
    assert all(o["Key"].endswith("/") and o["Size"] == 0 for o in left), left


def test_a_run_in_s3_is_logged_to_mlflow_from_its_uri(s3, monkeypatch, tmp_path):
    """`python -m runner.track s3://...` reads the run's config, figures and rows from the bucket."""
    import os
    import subprocess
    import sys

    import mlflow
    import yaml

    from runner.config import compose, to_dict
    from tests.e2e_helpers import ROOT

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)

    run = storage.resolve(s3.create_bucket("track-test") + "/runs/r1")
    run.child("config.yaml").write_text(yaml.safe_dump(to_dict(compose())))
    run.child("metrics.json").write_text(json.dumps({"status": "finished", "metrics": {"rows_ok": 2.0}, "prompt_columns": ["article"]}))
    buffer = pa.BufferOutputStream()
    pq.write_table(rows(["a", "b"]), buffer)
    run.child("results", "one.parquet").write_bytes(buffer.getvalue().to_pybytes())
    store = f"sqlite:///{tmp_path}/relogged.db"
    done = subprocess.run(
        [sys.executable, "-m", "runner.track", run.uri, "--uri", store, "--outputs-root", str(tmp_path / "outputs")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    mlflow.set_tracking_uri(store)
    logged = mlflow.search_runs(experiment_names=["runner"]).iloc[0]
    assert logged["metrics.rows_ok"] == 2 and logged["tags.runner.run_uri"] == run.uri


def test_resume_takes_overrides_after_force_as_the_readme_writes_it():
    from runner import resume

    for argv in (["s3://b/runs/x", "--force", "ray.address=auto", "tracking.enabled=false"],
                 ["s3://b/runs/x", "ray.address=auto", "--force", "tracking.enabled=false"]):
        args = resume.parse_args(argv)
        assert (args.location, args.force, sorted(args.overrides)) == ("s3://b/runs/x", True, ["ray.address=auto", "tracking.enabled=false"])
