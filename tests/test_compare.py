"""runner.compare against real MLflow stores: a SQLite store in tmp_path and a live
`mlflow server` on loopback. No Ray, no vLLM."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from runner import compare as cmp
from runner.compare import overrides

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_800_000_000_000  # ms; sweeps get explicit start times so "newest" is unambiguous


def job(batch_size, price, wall, out_tokens, steady, startup, rows=100, hw="l4", status="finished", error=None, extra=None):
    """One job's tags, params (as the runner flattens them) and metrics (as runner.metrics computes them)."""
    params = {
        "model.name": "llama31_8b",
        "hw.name": hw,
        "hw.price_per_hour": price,
        "processor.batch_size": batch_size,
        "engine.max_num_seqs": 64,
        "engine.enforce_eager": False,
        "tracking.experiment": "runner",
        "tracking.run_name": f"job-bs{batch_size}",  # bookkeeping that differs: never a swept setting
        **(extra or {}),
    }
    if status == "failed":  # a job that died after start-up logged (almost) nothing
        return {"overrides": f"processor.batch_size={batch_size}", "params": params, "metrics": {"startup_s": startup}, "status": status, "error": error}
    cost = price * wall / 3600
    metrics = {
        "rows": rows,
        "wall_s": wall,
        "startup_s": startup,
        "generation_s": wall - startup,
        "rows_per_s": rows / wall,
        "output_tokens_per_s": out_tokens / wall,
        "steady_output_tokens_per_s": steady,
        "cost_usd": cost,
        "cost_per_1m_output_tokens_usd": cost / out_tokens * 1e6,
        "cost_per_1k_rows_usd": cost / rows * 1e3,
    }
    return {"overrides": f"processor.batch_size={batch_size}", "params": params, "metrics": metrics, "status": status, "error": error}


def log_sweep(client, experiment_id, sweep_id, jobs, start, overrides_tag=True, common="", sweep_params=None):
    """A multirun as the runner logs it: a parent run (with the multirun's overrides as params,
    `sweep_params`, as runner.tracking.start_sweep_run stores them) and one nested run per job."""
    parent = client.create_run(
        experiment_id, start_time=start, run_name=f"sweep-{sweep_id}",
        tags={"runner.role": "sweep", "runner.sweep_id": sweep_id},
    ).info.run_id
    if sweep_params:
        client.log_batch(parent, params=[Param(f"sweep.{k}", v) for k, v in sweep_params.items()])
    children = []
    for i, spec in enumerate(jobs):
        tags = {
            "mlflow.parentRunId": parent,  # what mlflow.start_run(parent_run_id=...) sets: a nested run
            "runner.role": "job",
            "runner.sweep_id": sweep_id,
            "runner.status": spec["status"],
        }
        if overrides_tag:
            tags["runner.overrides"] = f"{common} {spec['overrides']}".strip()
        if spec["error"]:
            tags["runner.error"] = spec["error"]
        tags.update(spec.get("tags", {}))
        run_id = client.create_run(experiment_id, start_time=start + 1000 * (i + 1), tags=tags, run_name=f"{sweep_id}-{i}").info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), start, 0) for k, v in spec["metrics"].items()],
            params=[Param(k, str(v)) for k, v in spec["params"].items()],
        )
        client.set_terminated(run_id, status="FAILED" if spec["status"] == "failed" else "FINISHED", end_time=start + 1000 * (i + 1) + 500)
        children.append(run_id)
    client.set_terminated(parent, end_time=start + 1000 * (len(jobs) + 1))
    return parent, children


# The newest sweep: batch size 32 is fastest, 8 is cheapest (it ran on a cheaper price), 64 failed.
NEW = [
    job(8, price=0.9, wall=100, out_tokens=10_000, steady=120, startup=6),  # 100 tok/s, $2.5/1M
    job(16, price=3.6, wall=50, out_tokens=10_000, steady=260, startup=8),  # 200 tok/s, $5/1M
    job(32, price=7.2, wall=40, out_tokens=10_000, steady=300, startup=10),  # 250 tok/s, $8/1M
    job(64, price=7.2, wall=0, out_tokens=1, steady=0, startup=12, status="failed", error="torch.OutOfMemoryError: CUDA out of memory\ntraceback..."),
]
# An older sweep with figures that would win if it were mixed in.
OLD = [
    job(4, price=0.1, wall=10, out_tokens=99_990, steady=9999, startup=1),
    job(128, price=0.1, wall=10, out_tokens=99_990, steady=9999, startup=1),
]
# An older CPU sweep: price 0, so every cost is 0. bs 8 has more output tokens/s, bs 16 less wall per row.
CPU = [
    job(8, price=0.0, wall=60, out_tokens=6000, steady=150, startup=40, rows=32, hw="cpu"),
    job(16, price=0.0, wall=50, out_tokens=4000, steady=140, startup=40, rows=32, hw="cpu"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("runner", artifact_location=(root / "mlartifacts").as_uri())
    old_parent, old_children = log_sweep(client, exp, "s1", OLD, T0)
    cpu_parent, _ = log_sweep(client, exp, "cpu", CPU, T0 + 100_000)
    # Overrides every job shares are left out of the job labels. The newest sweep's parent
    # stores the multirun's overrides, as the runner's does; the older ones were logged without.
    new_parent, new_children = log_sweep(
        client, exp, "s2", NEW, T0 + 200_000, common="+experiment=batch_size_sweep model=llama31_8b",
        sweep_params={"overrides": "+experiment=batch_size_sweep model=llama31_8b", "processor.batch_size": "8,16,32,64"},
    )
    return {
        "root": root, "uri": uri, "client": client, "experiment": exp,
        "new_parent": new_parent, "new_children": new_children, "old_parent": old_parent,
        "old_children": old_children, "cpu_parent": cpu_parent,
    }


def assert_png(path: Path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000  # two panels with axes, lines and text; an empty figure is ~2 KB


def test_newest_sweep_table_order_marks_and_artifacts(store, tmp_path):
    result = cmp.compare(store["uri"], "runner", out_png=tmp_path / "c.png")

    assert result.sweep_id == "s2" and result.parent_run_id == store["new_parent"]
    assert result.swept == ["processor.batch_size"]  # not hw.price_per_hour (implied), not tracking.run_name
    table = result.table
    assert list(table["processor.batch_size"]) == [32, 16, 8, 64]  # by output_tokens_per_s, failed last
    assert list(table.index) == [f"processor.batch_size={b}" for b in (32, 16, 8, 64)]
    assert set(table["run_id"]) == set(store["new_children"])  # the older sweeps are not mixed in
    assert list(table["status"]) == ["finished"] * 3 + ["failed"]
    assert list(table["mark"]) == ["fastest", "", "cheapest", ""]
    assert result.fastest == "processor.batch_size=32" and result.cheapest == "processor.batch_size=8"
    assert result.fastest_run_id == store["new_children"][2]
    for column in ["status", "rows", "wall_s", "startup_s", "output_tokens_per_s", "steady_output_tokens_per_s",
                   "rows_per_s", "cost_per_1m_output_tokens_usd", "cost_per_1k_rows_usd", "mark"]:
        assert column in table.columns
    assert table["output_tokens_per_s"].iloc[0] == pytest.approx(250)
    assert table["cost_per_1m_output_tokens_usd"].iloc[2] == pytest.approx(2.5)
    failed = table.iloc[3]
    assert all(math.isnan(failed[c]) for c in cmp.FIGURES)  # no figures, even the startup_s it logged

    assert "processor.batch_size" in result.text and "fastest" in result.text and "cheapest" in result.text
    assert "CUDA out of memory" in result.text and "traceback" not in result.text
    assert cmp.format_table(result) == result.text

    assert result.plot_path == tmp_path / "c.png"
    assert_png(result.plot_path)
    assert result.logged_to_parent
    client = store["client"]
    names = {a.path for a in client.list_artifacts(store["new_parent"])}
    assert {"comparison.png", "comparison.txt"} <= names
    text = Path(client.download_artifacts(store["new_parent"], "comparison.txt", str(tmp_path))).read_text()
    assert "fastest:  processor.batch_size=32" in text
    assert_png(client.download_artifacts(store["new_parent"], "comparison.png", str(tmp_path)))
    assert client.list_artifacts(store["old_parent"]) == []


def test_sweep_by_id_parent_and_default_png(store):
    by_id = cmp.compare(store["uri"], "runner", sweep_id="s1", log_to_parent=False)
    assert set(by_id.table["run_id"]) == set(store["old_children"])
    assert by_id.plot_path == store["root"] / "compare" / "s1.png"  # beside the SQLite store
    assert_png(by_id.plot_path)
    by_parent = cmp.compare(store["uri"], "runner", parent_run_id=store["old_parent"], log_to_parent=False, out_png=store["root"] / "p.png")
    assert by_parent.sweep_id == "s1" and list(by_parent.table["run_id"]) == list(by_id.table["run_id"])
    assert store["client"].list_artifacts(store["old_parent"]) == []  # log_to_parent=False


def test_zero_cost_cheapest_is_least_wall_per_row(store, tmp_path):
    result = cmp.compare(store["uri"], "runner", sweep_id="cpu", out_png=tmp_path / "cpu.png", log_to_parent=False)
    assert cmp.ZERO_COST_NOTE in result.notes
    assert "all costs are 0: hw price_per_hour is 0" in result.text
    assert result.fastest == "processor.batch_size=8"  # 100 output tok/s vs 80
    assert result.cheapest == "processor.batch_size=16"  # 50/32 wall_s per row vs 60/32
    assert list(result.table["mark"]) == ["fastest", "cheapest"]
    assert_png(result.plot_path)


def test_forced_param_and_other_metric(store, tmp_path):
    result = cmp.compare(store["uri"], "runner", params=["params.hw.price_per_hour", "processor.batch_size"],
                         metric="steady_output_tokens_per_s", out_png=tmp_path / "f.png", log_to_parent=False)
    assert result.swept == ["hw.price_per_hour", "processor.batch_size"]
    assert list(result.table["processor.batch_size"]) == [32, 16, 8, 64]
    assert result.fastest == "hw.price_per_hour=7.2 processor.batch_size=32"  # the overrides lack the price
    assert_png(result.plot_path)  # several params: categorical x axis labelled by the job labels
    by_startup = cmp.compare(store["uri"], "runner", metric="startup_s", out_png=tmp_path / "s.png", log_to_parent=False)
    assert list(by_startup.table["processor.batch_size"]) == [8, 16, 32, 64]  # a duration: lowest first
    assert by_startup.fastest == "processor.batch_size=8"
    with pytest.raises(cmp.CompareError, match=r"processor\.batch_size.*--param"):
        cmp.compare(store["uri"], "runner", params=["processor.batch_sise"], log_to_parent=False)
    with pytest.raises(cmp.CompareError, match="--metric"):
        cmp.compare(store["uri"], "runner", metric="no_such_metric", log_to_parent=False)


def test_all_finished_jobs(store, tmp_path):
    result = cmp.compare(store["uri"], "runner", all_runs=True, out_png=tmp_path / "all.png")
    assert len(result.table) == 7  # 3 + 2 + 2 finished jobs; the failed one and the parents left out
    assert set(result.table["status"]) == {"finished"}
    assert result.parent_run_id is None and not result.logged_to_parent
    assert result.swept == ["processor.batch_size", "hw.name"]  # hw.name varies (cpu, l4); its price is implied
    assert result.table["output_tokens_per_s"].iloc[0] == pytest.approx(9999)  # the old sweep's jobs
    # cost 0 on the CPU ties; the tie goes to the least wall_s per row
    # overrides strings do not tell the sweeps apart here: labels come from the swept params
    assert result.fastest == "processor.batch_size=4 hw.name=l4"
    assert result.cheapest == "processor.batch_size=16 hw.name=cpu"
    assert_png(result.plot_path)


def test_swept_from_params_when_no_overrides_tag(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("hw", artifact_location=(tmp_path / "art").as_uri())
    jobs = [
        job(8, price=0.8, wall=100, out_tokens=8000, steady=100, startup=20, hw="l4", extra={"engine.max_num_batched_tokens": 2048}),
        job(16, price=0.8, wall=80, out_tokens=8000, steady=120, startup=20, hw="l4", extra={"engine.max_num_batched_tokens": 2048}),
        job(8, price=12.29, wall=20, out_tokens=8000, steady=500, startup=30, hw="h100", extra={"engine.max_num_batched_tokens": 8192}),
        job(16, price=12.29, wall=18, out_tokens=8000, steady=600, startup=30, hw="h100", extra={"engine.max_num_batched_tokens": 8192}),
    ]
    log_sweep(client, exp, "hw1", jobs, T0, overrides_tag=False)
    result = cmp.compare(uri, "hw", out_png=tmp_path / "hw.png")
    assert result.swept == ["hw.name", "processor.batch_size"]
    assert result.table.index[0] == "hw.name=h100 processor.batch_size=16"
    assert result.cheapest == "hw.name=l4 processor.batch_size=16"
    assert_png(result.plot_path)


def test_the_sweeps_own_record_says_what_was_swept(tmp_path):
    # Every job's model.path differs (a folder per job) and no job carries its overrides: a guess
    # from the params alone would take the paths for the setting. The parent's record says
    # hw (a group: its hw.name column) and processor.batch_size (the sweeper's param) were swept.
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("grid", artifact_location=(tmp_path / "art").as_uri())
    jobs = [
        job(batch, price=price, wall=wall, out_tokens=8000, steady=100, startup=20, hw=hw, extra={"model.path": f"/tmp/model-{i}"})
        for i, (hw, price, batch, wall) in enumerate([("l4", 0.8, 8, 100), ("l4", 0.8, 16, 80), ("h100", 12.29, 8, 20), ("h100", 12.29, 16, 18)])
    ]
    log_sweep(client, exp, "g1", jobs, T0, overrides_tag=False,
              sweep_params={"overrides": "hw=l4,h100 model=llama31_8b", "processor.batch_size": "8,16"})
    result = cmp.compare(uri, "grid", out_png=tmp_path / "g.png", log_to_parent=False)
    assert result.swept == ["hw.name", "processor.batch_size"]
    assert list(result.table.index) == [
        "hw.name=h100 processor.batch_size=16", "hw.name=h100 processor.batch_size=8",
        "hw.name=l4 processor.batch_size=16", "hw.name=l4 processor.batch_size=8",
    ]
    assert "model.path" not in result.table.columns


def test_stored_overrides_are_read_with_hydras_parser():
    text = "processor.batch_size=8 +engine.extra.swap_space=4 hw=l4 prompt.choices=[politics, sport] ~dataset.limit prompt.system=Be brief"
    assert overrides.split(text) == [
        "processor.batch_size=8", "+engine.extra.swap_space=4", "hw=l4", "prompt.choices=[politics, sport]", "~dataset.limit",
        "prompt.system=Be brief",
    ]
    assert overrides.values(text) == {
        "processor.batch_size": 8, "engine.extra.swap_space": 4, "hw": "l4", "prompt.choices": ["politics", "sport"], "prompt.system": "Be brief",
    }
    parent = {"overrides": "hw=l4,h100 model=llama31_8b prompt.temperature=range(0,1,0.5)", "processor.batch_size": "8,16", "other": "x"}
    assert overrides.swept_by_parent({f"sweep.{k}": v for k, v in parent.items()}) == ["hw", "prompt.temperature", "processor.batch_size"]


def test_the_engine_column_says_which_jobs_shared_one(store, tmp_path):
    # Jobs tagged with the engine they ran on show it beside their status; a job without the tag shows "-".
    client = store["client"]
    for run_id in store["new_children"][:2]:
        client.set_tag(run_id, "runner.engine", "warm-1")
    try:
        result = cmp.compare(store["uri"], "runner", out_png=tmp_path / "e.png", log_to_parent=False)
    finally:
        for run_id in store["new_children"][:2]:
            client.delete_tag(run_id, "runner.engine")
    assert list(result.table.columns[:3]) == ["processor.batch_size", "status", "engine"]
    assert list(result.table["engine"].fillna("-")) == ["-", "warm-1", "warm-1", "-"]  # batch 32, 16, 8, 64
    header, first = result.text.splitlines()[1].split(), result.text.splitlines()[2].split()
    assert header[:3] == ["processor.batch_size", "status", "engine"] and first[:3] == ["32", "finished", "-"]


def test_clear_errors(store, tmp_path):
    with pytest.raises(cmp.CompareError, match="no experiment 'nope'.*--experiment"):
        cmp.compare(store["uri"], "nope")
    with pytest.raises(cmp.CompareError, match="no MLflow store.*--uri"):
        cmp.compare(f"sqlite:///{tmp_path / 'missing.db'}", "runner")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(cmp.CompareError, match="--parent"):
        cmp.compare(store["uri"], "runner", parent_run_id="0123456789abcdef0123456789abcdef")
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("runner", artifact_location=(tmp_path / "a").as_uri())
    with pytest.raises(cmp.CompareError, match="no sweep found.*--all"):
        cmp.compare(uri, "runner")
    with pytest.raises(cmp.CompareError, match="no finished job.*--experiment"):
        cmp.compare(uri, "runner", all_runs=True)
    # An overlay that sets tracking.experiment puts its sweeps elsewhere: the message says where.
    client = MlflowClient(tracking_uri=uri)
    other = client.create_experiment("batch_size_sweep", artifact_location=(tmp_path / "b").as_uri())
    parent, _ = log_sweep(client, other, "b1", CPU, T0)
    with pytest.raises(cmp.CompareError, match="no sweep found.*pass --experiment batch_size_sweep"):
        cmp.compare(uri, "runner")
    with pytest.raises(cmp.CompareError, match="no sweep 'b1'.*pass --experiment batch_size_sweep"):
        cmp.compare(uri, "runner", sweep_id="b1")
    with pytest.raises(cmp.CompareError, match="is in experiment 'batch_size_sweep'.*--experiment batch_size_sweep"):
        cmp.compare(uri, "runner", parent_run_id=parent)


def scored_job(temperature, rouge_l, out_tokens, wall=100):
    spec = job(16, price=0.0, wall=wall, out_tokens=out_tokens, steady=out_tokens / 50, startup=50, rows=32, hw="cpu",
               extra={"prompt.temperature": temperature})
    spec["overrides"] = f"prompt.temperature={temperature}"
    spec["metrics"].update(rouge1_f_mean=rouge_l + 0.08, rouge2_f_mean=rouge_l - 0.1, rougeL_f_mean=rouge_l,
                           rougeLsum_f_mean=rouge_l + 0.05, quality_rows=32)
    return spec


@pytest.fixture(scope="module")
def scored_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("scored")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("runner", artifact_location=(root / "mlartifacts").as_uri())
    # t=0 scores best; t=0.3 gives up 0.005 for more speed; t=0.7 is fastest but 0.03 under the best.
    jobs = [scored_job(0.0, 0.320, 6000), scored_job(0.3, 0.315, 7000), scored_job(0.7, 0.290, 9000),
            job(16, price=0.0, wall=0, out_tokens=1, steady=0, startup=1, status="failed", error="boom")]
    jobs[3]["overrides"] = "prompt.temperature=1.5"
    log_sweep(client, exp, "q1", jobs, T0)
    return uri


def test_quality_columns_and_the_trade_off_within_the_tolerance(scored_store, tmp_path):
    result = cmp.compare(scored_store, "runner", out_png=tmp_path / "q.png", log_to_parent=False)
    table = result.table
    assert list(table.index) == ["prompt.temperature=0.7", "prompt.temperature=0.3", "prompt.temperature=0.0", "prompt.temperature=1.5"]
    assert list(table["rougeL_f_mean"][:3]) == pytest.approx([0.290, 0.315, 0.320])
    assert set(cmp.QUALITY_FIGURES) <= set(table.columns)
    assert result.best_quality == "prompt.temperature=0.0"
    assert result.tradeoff == "prompt.temperature=0.3"  # within 0.01 of the best, faster than it
    assert result.fastest == "prompt.temperature=0.7"  # fastest, but 0.03 under the best
    assert list(table["mark"]) == ["fastest, cheapest", "trade-off", "best quality", ""]  # cheapest: equal wall_s, the first
    lines = result.text.splitlines()
    header = lines[1].split()
    assert header[-5:] == ["rouge1", "rouge2", "rougeL", "rougeLsum", "mark"]
    assert lines[3].split()[-5:-1] == ["0.395", "0.215", "0.315", "0.365"]
    assert "best quality: prompt.temperature=0.0  (rougeL_f_mean 0.320)" in result.text
    assert ("trade-off: prompt.temperature=0.3  (best output_tokens_per_s within 0.01 rougeL_f_mean of the best: "
            "70.0 output_tokens_per_s, rougeL_f_mean 0.315, 0.005 under the best)") in result.text
    assert_png(result.plot_path)

    wider = cmp.compare(scored_store, "runner", out_png=tmp_path / "w.png", log_to_parent=False, quality_tolerance=0.05)
    assert wider.tradeoff == "prompt.temperature=0.7" and "within 0.05 rougeL_f_mean" in wider.text
    exact = cmp.compare(scored_store, "runner", out_png=tmp_path / "e.png", log_to_parent=False, quality_tolerance=0)
    assert exact.tradeoff == exact.best_quality == "prompt.temperature=0.0" and ", the best)" in exact.text
    by_lsum = cmp.compare(scored_store, "runner", out_png=tmp_path / "l.png", log_to_parent=False, quality_metric="rougeLsum_f_mean")
    assert by_lsum.tradeoff == "prompt.temperature=0.3" and "rougeLsum_f_mean 0.370" in by_lsum.text


def test_quality_options_are_checked_and_unscored_sweeps_show_no_quality(scored_store, store, tmp_path):
    with pytest.raises(cmp.CompareError, match="--quality-metric 'rouge3'.*rougeL_f_mean"):
        cmp.compare(scored_store, "runner", quality_metric="rouge3", log_to_parent=False)
    with pytest.raises(cmp.CompareError, match="--quality-tolerance -0.1"):
        cmp.compare(scored_store, "runner", quality_tolerance=-0.1, log_to_parent=False)
    plain = cmp.compare(store["uri"], "runner", out_png=tmp_path / "p.png", log_to_parent=False)
    assert plain.best_quality is None and plain.tradeoff is None
    assert not set(cmp.QUALITY_FIGURES) & set(plain.table.columns)
    assert "trade-off" not in plain.text and "rouge" not in plain.text


def test_cli_takes_the_quality_tolerance(scored_store, tmp_path):
    done = run_cli("--uri", scored_store, "--out", str(tmp_path / "cli.png"), "--no-log", "--quality-tolerance", "0.05")
    assert done.returncode == 0, done.stderr
    assert "trade-off: prompt.temperature=0.7" in done.stdout
    bad = run_cli("--uri", scored_store, "--quality-metric", "bleu")
    assert bad.returncode == 2 and "--quality-metric" in bad.stderr


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "runner.compare", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_prints_table_and_exits_2_on_unknown_sweep(store, tmp_path):
    done = run_cli("--uri", store["uri"], "--out", str(tmp_path / "cli.png"), "--no-log")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("sweep s2 (parent run ")
    header = lines[1].split()
    assert header[:3] == ["processor.batch_size", "status", "rows"] and header[-1] == "mark"
    assert lines[2].split()[0] == "32" and lines[2].split()[-1] == "fastest"
    assert lines[5].split()[:2] == ["64", "failed"]
    assert "fastest:  processor.batch_size=32" in done.stdout
    assert "cheapest: processor.batch_size=8" in done.stdout
    assert f"plot: {tmp_path / 'cli.png'}" in done.stdout
    assert_png(tmp_path / "cli.png")

    bad = run_cli("--uri", store["uri"], "--sweep", "nope")
    assert bad.returncode == 2
    message = bad.stderr.strip().splitlines()
    assert len(message) == 1 and "no sweep 'nope'" in message[0] and "--sweep" in message[0] and "s2" in message[0]
    assert bad.stdout == ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tracking_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as server_log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
             "--default-artifact-root", str(tmp_path / "art"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group: uvicorn + job runner
        )
    try:
        deadline = time.monotonic() + 75  # ~30 s on a busy 2-core machine
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start (exit code {server.poll()}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)

        client = MlflowClient(tracking_uri=url)
        exp = client.create_experiment("remote")
        parent, children = log_sweep(client, exp, "r1", NEW[:2], T0)
        result = cmp.compare(url, "remote", out_png=tmp_path / "remote.png")
        assert result.sweep_id == "r1" and result.parent_run_id == parent
        assert list(result.table["run_id"]) == [children[1], children[0]]
        assert result.fastest == "processor.batch_size=16" and result.cheapest == "processor.batch_size=8"
        assert_png(result.plot_path)
        assert {"comparison.png", "comparison.txt"} <= {a.path for a in client.list_artifacts(parent)}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(server.pid, signal.SIGKILL)  # the server's parent process may linger after SIGTERM
        except ProcessLookupError:
            pass
        server.wait(timeout=10)
