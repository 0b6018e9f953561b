"""dry_run=true prints the plan: what would load, read, run where, and be written where."""

import json

from runner import app
from runner.config import compose, to_object


def dry_run(tmp_path, capsys, *overrides):
    cfg = compose(["dry_run=true", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", *overrides])
    outcome = app.run(to_object(cfg), tmp_path / "run", outputs_root=tmp_path / "outputs")
    assert not (tmp_path / "run").exists() and not (tmp_path / "mlflow.db").exists()
    printed = capsys.readouterr().out
    return outcome, {line.split()[0]: line for line in printed.splitlines()[1:]}, printed


def test_the_plan_of_the_default_job(tmp_path, capsys):
    # Seen: the setting said "prints the plan" and one line came out.
    outcome, plan, printed = dry_run(tmp_path, capsys)
    assert printed.startswith("dry run: every check passed")
    assert set(plan) == {"model", "input", "prompts", "engine", "Ray", "run", "tracking"}
    assert "smollm2_135m" in plan["model"] and "embedded" in plan["model"]
    assert "32 row(s) in 1 chunk(s)" in plan["input"]
    assert "at most" in plan["prompts"] and "prompt.max_tokens=150" in plan["prompts"] and "max_model_len=4096" in plan["prompts"]
    assert "max_model_len=4096" in plan["engine"] and "max_num_seqs=32" in plan["engine"]
    assert "1 engine replica(s)" in plan["Ray"] and "no GPU" in plan["Ray"] and "hw=cpu" in plan["Ray"]
    assert str(outcome.location) in plan["run"] and "parquet" in plan["run"]
    assert f"sqlite:///{tmp_path}/mlflow.db" in plan["tracking"]


def test_the_plan_gives_the_token_range_when_the_length_check_tokenized(tmp_path, capsys):
    rows = [{"id": "short", "article": "word " * 20}, {"id": "long", "article": "word " * 150}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, plan, _ = dry_run(
        tmp_path, capsys, "dataset=jsonl", f"dataset.path={tmp_path}/d.jsonl", "engine.max_model_len=800", "prompt.max_tokens=16",
        "tracking=off", "processor.concurrency=2", "dataset.limit=2",
    )
    low, high = plan["prompts"].split()[1].split("..")
    assert 0 < int(low) < int(high) < 800 and "(tokenized)" in plan["prompts"]
    assert "2 row(s) in 1 chunk(s), dataset.limit=2" in plan["input"]
    assert "2 engine replica(s)" in plan["Ray"]
    assert plan["tracking"].split() == ["tracking", "off"]
