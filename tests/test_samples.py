"""Several samples per prompt, without Ray: keys, what a resume still runs, accounting."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from runner import accounting, run_state, samples, storage


def test_split_done_tells_complete_rows_from_rows_done_in_part():
    done = {samples.key("a", 0), samples.key("a", 1), samples.key("b", 1)}
    complete, partial = samples.split_done(done, n=2)
    assert complete == {"a"} and partial == {"b": {1}}
    # One sample per row: a key is an id.
    assert samples.split_done({"a", "b"}, n=1) == ({"a", "b"}, {})


def test_expand_yields_each_sample_still_to_run_with_its_index():
    row = {"id": "b", "article": "text"}
    assert [r["sample_index"] for r in samples.expand(row, 3, "id", {"b": {1}})] == [0, 2]
    assert [r["sample_index"] for r in samples.expand({"id": "c"}, 3, "id", {"b": {1}})] == [0, 1, 2]


def sample_rows(pairs, error=""):
    return pa.Table.from_pylist([{"id": i, "sample_index": k, "generated_text": f"{i}/{k}", "error": error} for i, k in pairs])


def test_each_id_and_sample_is_accounted_once_even_after_a_repeated_write(tmp_path):
    where = storage.resolve(str(tmp_path))
    (tmp_path / "results").mkdir()
    pq.write_table(pa.concat_tables([sample_rows([("a", 0), ("a", 1), ("b", 0)]), sample_rows([("x", 0), ("x", 1)], error="bad")]), tmp_path / "results/one.parquet")
    pq.write_table(sample_rows([("b", 0), ("b", 1)]), tmp_path / "results/two.parquet")  # ("b", 0) again
    counts = accounting.settle(where, "id", rows_in=3, samples_per_row=2)
    assert counts.balanced and counts.as_dict() == {
        "rows_in": 3, "samples_per_row": 2, "samples_in": 6, "samples_ok": 4, "samples_failed": 2, "duplicate_samples": 0,
    }
    assert run_state.finished_ids(where, "id") == {samples.key(i, k) for i in "abx" for k in (0, 1)}
    failed = [json.loads(line) for line in (tmp_path / "failed/one.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["sample_index"]) for r in failed) == [("x", 0), ("x", 1)]
    assert accounting.settle(where, "id", rows_in=3, samples_per_row=2) == counts


def test_a_missing_sample_leaves_the_run_unbalanced(tmp_path):
    where = storage.resolve(str(tmp_path))
    (tmp_path / "results").mkdir()
    pq.write_table(sample_rows([("a", 0), ("a", 1), ("b", 0)]), tmp_path / "results/one.parquet")
    counts = accounting.settle(where, "id", rows_in=2, samples_per_row=2)
    assert not counts.balanced and counts.rows_ok == 3
