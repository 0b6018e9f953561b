"""The readers: every input rule of issue 9 on local files and on S3 (a moto server), then
the Ray Dataset they build, which must yield exactly the rows not done, once each."""

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner import readers, storage
from runner.config import compose
from runner.readers.base import pending_work
from tests.configs import dataset, typed_config

INPUT_ERROR = readers.INPUT_ERROR_COLUMN


def write_jsonl(path: Path, rows) -> Path:
    """Rows are dicts (written as JSON) or bytes (written as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))
    return path


def jsonl_reader(path, text_columns=("article",), **settings) -> readers.Reader:
    rows_per_chunk = settings.pop("rows_per_chunk", 3)
    return readers.for_dataset(dataset(source="jsonl", path=str(path), **settings), text_columns=text_columns, rows_per_chunk=rows_per_chunk)


def read_all(reader, scan, done=()) -> list:
    """What the Ray tasks would yield, read in this process (same code, no Ray)."""
    tables = [reader.read_chunk(chunk, scan.layout, skip) for chunk, skip in pending_work(scan, done)]
    return pa.concat_tables(tables).to_pylist() if tables else []


def articles(n, start=1):
    return [{"id": f"n-{i:02d}", "article": f"text {i}"} for i in range(start, start + n)]


# ---------------------------------------------------------------- one bad row, not a lost run


def test_a_line_that_is_not_json_is_a_failed_row_naming_file_and_line(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", articles(2) + [b'{"id": "x", "article": "unterminated'] + articles(2, start=3))
    reader = jsonl_reader(tmp_path / "d.jsonl")
    scan = reader.scan()
    assert scan.rows == 5
    [bad] = scan.bad_rows
    assert (bad.file, bad.line, bad.id) == ("d.jsonl", 3, "d.jsonl:3") and "not valid JSON" in bad.reason
    rows = read_all(reader, scan)
    assert [r["id"] for r in rows] == ["n-01", "n-02", "d.jsonl:3", "n-03", "n-04"]
    assert rows[2][INPUT_ERROR].startswith("d.jsonl line 3: not valid JSON") and rows[2]["article"] is None
    assert all(r[INPUT_ERROR] == "" for i, r in enumerate(rows) if i != 2)


def test_a_json_value_that_is_not_an_object_is_a_failed_row(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", articles(1) + [b"[1, 2]", b'"text"'])
    scan = jsonl_reader(tmp_path / "d.jsonl").scan()
    assert [(b.line, b.reason) for b in scan.bad_rows] == [(2, "a JSON list, not an object"), (3, "a JSON str, not an object")]


def test_a_utf8_bom_is_read(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(articles(1)[0]).encode() + b"\n" + json.dumps(articles(1, 2)[0]).encode() + b"\n")
    reader = jsonl_reader(path)
    scan = reader.scan()
    assert scan.bad_rows == [] and list(scan.ids()) == ["n-01", "n-02"]
    assert reader.columns() == ["id", "article"]
    assert [r["id"] for r in read_all(reader, scan)] == ["n-01", "n-02"]


def test_bytes_that_are_not_utf8_fail_their_line_only(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", articles(1) + [b'{"id": "latin", "article": "caf\xe9"}'] + articles(1, 2))
    reader = jsonl_reader(tmp_path / "d.jsonl")
    scan = reader.scan()
    [bad] = scan.bad_rows
    assert (bad.where, bad.id) == ("d.jsonl:2", "d.jsonl:2") and "not UTF-8" in bad.reason
    rows = read_all(reader, scan)
    assert [r["id"] for r in rows] == ["n-01", "d.jsonl:2", "n-02"]
    assert rows[1][INPUT_ERROR].startswith("d.jsonl line 2: not UTF-8")


def test_a_file_of_another_format_is_ignored_by_scan_and_reader_alike(tmp_path):
    write_jsonl(tmp_path / "in" / "part-0.jsonl", articles(3))
    (tmp_path / "in" / "README.txt").write_text("how this data was made\n")
    reader = jsonl_reader(tmp_path / "in")
    assert [f.relative for f in reader.files()] == ["part-0.jsonl"]
    scan = reader.scan()
    assert scan.ignored_files == ["README.txt"] and scan.rows == 3
    assert any("README.txt" in line for line in scan.notes())
    assert len(read_all(reader, scan)) == 3
    assert readers.for_dataset(dataset(source="jsonl", path=str(tmp_path / "in"))).scan().rows == 3


def test_a_folder_without_files_of_the_format_names_the_setting_and_the_fix(tmp_path):
    (tmp_path / "README.txt").write_text("x")
    with pytest.raises(readers.DatasetError) as caught:
        jsonl_reader(tmp_path).scan()
    message = str(caught.value)
    assert "dataset.path=" in message and "no jsonl files" in message and "README.txt" in message and "Fix:" in message


def test_a_number_in_the_text_column_is_a_failed_row_and_cannot_break_the_schema(tmp_path):
    # Seen: one such row among strings aborted the whole run with 0 rows written.
    write_jsonl(tmp_path / "d.jsonl", articles(4) + [{"id": "n", "article": 12345}] + articles(4, start=5))
    reader = jsonl_reader(tmp_path / "d.jsonl")
    scan = reader.scan()
    assert scan.schema.field("article").type == pa.string()
    assert scan.encoded_columns == {"article": ["int", "str"]}
    [bad] = scan.bad_rows
    assert bad.id == "n" and bad.reason == "column 'article' is int, not text"
    rows = {r["id"]: r for r in read_all(reader, scan)}
    assert len(rows) == 9 and rows["n"]["article"] == "12345" and rows["n"][INPUT_ERROR] == "d.jsonl line 5: column 'article' is int, not text"
    # Without the prompt's columns the row is kept (the prompt layer fails it) and still fits the schema.
    plain = jsonl_reader(tmp_path / "d.jsonl", text_columns=())
    assert plain.scan().bad_rows == [] and len(read_all(plain, plain.scan())) == 9


def test_mixed_and_nested_values_get_one_type_per_column(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [
        {"id": "1", "article": "a", "score": 1, "tag": "x", "meta": {"k": 1}},
        {"id": "2", "article": "b", "score": 2.5, "tag": 7, "meta": None},
        {"id": "3", "article": "c", "score": None, "tag": None, "meta": [1]},
    ])
    reader = jsonl_reader(tmp_path / "d.jsonl")
    scan = reader.scan()
    types = {f.name: f.type for f in scan.schema}
    assert types == {"id": pa.string(), "article": pa.string(), "score": pa.float64(), "tag": pa.string(), "meta": pa.string(), INPUT_ERROR: pa.string()}
    rows = read_all(reader, scan)
    assert [r["score"] for r in rows] == [1.0, 2.5, None]
    assert [r["tag"] for r in rows] == ["x", "7", None] and [r["meta"] for r in rows] == ['{"k": 1}', None, "[1]"]


@pytest.mark.parametrize("row, reason", [
    ({"id": "n", "article": None}, "column 'article' is null"),
    ({"id": "n"}, "column 'article' is missing"),
    ({"id": "n", "article": ""}, "column 'article' is empty"),
    ({"id": "n", "article": "  \n "}, "column 'article' is empty"),
])
def test_a_missing_null_or_empty_text_is_a_failed_row(tmp_path, row, reason):
    write_jsonl(tmp_path / "d.jsonl", articles(1) + [row])
    reader = jsonl_reader(tmp_path / "d.jsonl")
    scan = reader.scan()
    assert [(b.id, b.reason) for b in scan.bad_rows] == [("n", reason)]
    assert read_all(reader, scan)[1][INPUT_ERROR] == f"d.jsonl line 2: {reason}"
    assert reader.head(10) == articles(1)  # the length check sees only rows that can become prompts


@pytest.mark.parametrize("value, reason", [(None, "'id' is null"), ("", "'id' is empty"), ({"a": 1}, "'id' is dict, not a string or number")])
def test_a_row_whose_id_is_unusable_is_a_failed_row_with_a_derived_id(tmp_path, value, reason):
    write_jsonl(tmp_path / "d.jsonl", articles(1) + [{"id": value, "article": "text"}])
    reader = jsonl_reader(tmp_path / "d.jsonl")
    scan = reader.scan()
    assert not scan.derived_ids
    assert [(b.id, b.reason) for b in scan.bad_rows] == [("d.jsonl:2", reason)]
    assert [r["id"] for r in read_all(reader, scan)] == ["n-01", "d.jsonl:2"]


def test_numeric_ids_become_text(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"id": 7, "article": "a"}, {"id": 8, "article": "b"}])
    reader = jsonl_reader(tmp_path / "d.jsonl")
    scan = reader.scan()
    assert list(scan.ids()) == ["7", "8"] and scan.schema.field("id").type == pa.string()
    assert [r["id"] for r in read_all(reader, scan)] == ["7", "8"]


# ---------------------------------------------------------------- ids


def test_data_without_an_id_column_gets_stable_derived_ids(tmp_path):
    folder = tmp_path / "docs"
    write_jsonl(folder / "a.jsonl", [{"document": "one"}, b"", {"document": "two"}])
    write_jsonl(folder / "sub" / "b.jsonl", [{"document": "one"}, {"document": "one"}])  # duplicate rows stay two rows
    first = jsonl_reader(folder, text_columns=("document",)).scan()
    again_reader = jsonl_reader(folder, text_columns=("document",))
    again = again_reader.scan()
    expected = ["a.jsonl:1", "a.jsonl:3", "sub/b.jsonl:1", "sub/b.jsonl:2"]
    assert first.derived_ids and list(first.ids()) == list(again.ids()) == expected
    assert first.id_column == "id" and first.schema.names[0] == "id" and first.duplicate_ids == []
    assert any("<file>:<line" in line for line in first.notes())
    rows = read_all(again_reader, again)
    assert [r["id"] for r in rows] == expected and [r["document"] for r in rows] == ["one", "two", "one", "one"]


def test_an_explicit_id_column_the_data_lacks_names_the_key_and_the_fix(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"document": "one"}])
    with pytest.raises(readers.DatasetError) as caught:
        jsonl_reader(tmp_path / "d.jsonl", text_columns=(), id_column="doc_id").scan()
    assert "dataset.id_column='doc_id'" in str(caught.value) and "dataset.id_column=null" in str(caught.value)
    assert readers.id_column(dataset(id_column=None)) == "id" and readers.id_column(dataset(id_column="doc_id")) == "doc_id"


def test_duplicate_ids_are_found_with_where_they_occur(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", articles(2) + [{"id": "n-01", "article": "again"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "n-01", "article": "thrice"}, {"id": "n-02", "article": "twice"}])
    scan = jsonl_reader(tmp_path).scan()
    assert [(d.id, d.where) for d in scan.duplicate_ids] == [
        ("n-01", ["a.jsonl:1", "a.jsonl:3", "b.jsonl:1"]), ("n-02", ["a.jsonl:2", "b.jsonl:2"]),
    ]
    problem = scan.duplicate_problem()
    assert "'n-01' at a.jsonl:1, a.jsonl:3, b.jsonl:1" in problem and "dataset.on_duplicate_id=rename" in problem


def test_duplicate_ids_renamed_in_file_order_the_same_way_every_scan(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", articles(2) + [{"id": "n-01", "article": "again"}, {"id": "n-01#2", "article": "taken"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "n-01", "article": "thrice"}])
    reader = jsonl_reader(tmp_path, on_duplicate_id="rename")
    scan = reader.scan()
    expected = ["n-01", "n-02", "n-01#3", "n-01#2", "n-01#4"]
    assert list(scan.ids()) == expected == list(jsonl_reader(tmp_path, on_duplicate_id="rename").scan().ids())
    assert scan.duplicate_ids == [] and scan.duplicate_problem() is None
    assert scan.renamed == 2 and [d.id for d in scan.renamed_ids] == ["n-01"]
    assert [r["id"] for r in read_all(reader, scan)] == expected


def test_on_duplicate_id_must_be_fail_or_rename(tmp_path):
    from hydra.errors import ConfigCompositionException

    # The schema refuses any other value when the config is composed, naming the choices...
    with pytest.raises(ConfigCompositionException) as caught:
        compose(["dataset.on_duplicate_id=drop"])
    assert "drop" in str(caught.value.__cause__ or caught.value) and "rename" in str(caught.value.__cause__ or caught.value)
    # ...and a reader made without a config refuses it itself.
    with pytest.raises(readers.DatasetError, match="dataset.on_duplicate_id='drop'"):
        readers.JsonlReader(storage.resolve(str(tmp_path)), on_duplicate_id="drop")


# ---------------------------------------------------------------- limit, done ids, chunks


def test_limit_is_the_first_rows_in_file_order_every_time(tmp_path):
    # Seen: limit=16, interrupted and resumed, gave 20 ids (Ray's limit after a checkpoint filter).
    write_jsonl(tmp_path / "part-0.jsonl", articles(10))
    write_jsonl(tmp_path / "part-1.jsonl", articles(10, start=11))
    reader = jsonl_reader(tmp_path, limit=16)
    scan = reader.scan()
    first16 = [f"n-{i:02d}" for i in range(1, 17)]
    assert scan.rows == 16 and list(scan.ids()) == first16 == list(jsonl_reader(tmp_path, limit=16).scan().ids())
    done = set(first16[:5] + ["n-20"])
    left = [r["id"] for r in read_all(reader, scan, done)]
    assert left == first16[5:]
    assert [r["id"] for r in read_all(reader, scan, set(first16))] == []


def test_chunks_whose_rows_are_all_done_are_not_read(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", articles(9))
    scan = jsonl_reader(tmp_path / "d.jsonl").scan()
    assert [c.rows for c in scan.chunks] == [3, 3, 3]
    work = pending_work(scan, {"n-01", "n-02", "n-03", "n-05"})
    assert [(chunk.index, skip) for chunk, skip in work] == [(1, [1]), (2, [])]


def test_jsonl_chunks_are_byte_ranges_that_together_read_every_line_once(tmp_path):
    lines = articles(7) + [b"", b"   "] + articles(3, start=8)
    write_jsonl(tmp_path / "d.jsonl", lines)
    whole = jsonl_reader(tmp_path / "d.jsonl", rows_per_chunk=1000)
    small = jsonl_reader(tmp_path / "d.jsonl", rows_per_chunk=2)
    scans = whole.scan(), small.scan()
    assert [len(s.chunks) for s in scans] == [1, 5]
    assert [c.first for c in scans[1].chunks] == [1, 3, 5, 7, 11]
    assert read_all(whole, scans[0]) == read_all(small, scans[1])
    assert [r["id"] for r in read_all(small, scans[1])] == [f"n-{i:02d}" for i in range(1, 11)]


# ---------------------------------------------------------------- other formats


def test_parquet_row_groups_are_chunks(tmp_path):
    table = pa.table({"doc_id": [f"d{i}" for i in range(10)], "article": [f"t{i}" if i != 4 else None for i in range(10)], "n": list(range(10))})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=4)
    pq.write_table(table.slice(0, 2).set_column(0, "doc_id", pa.array(["e0", "e1"])), tmp_path / "b.parquet")
    (tmp_path / "_SUCCESS").write_text("")
    reader = readers.for_dataset(dataset(source="parquet", path=str(tmp_path), id_column="doc_id", limit=11), text_columns=["article"])
    assert reader.columns() == ["doc_id", "article", "n"] and reader.column_types()["n"] == pa.int64()
    scan = reader.scan()
    assert [(c.relative, c.row_group, c.first, c.rows) for c in scan.chunks] == [("a.parquet", 0, 1, 4), ("a.parquet", 1, 5, 4), ("a.parquet", 2, 9, 2), ("b.parquet", 0, 1, 1)]
    assert [(b.where, b.reason) for b in scan.bad_rows] == [("a.parquet:5", "column 'article' is null")]
    rows = read_all(reader, scan, {"d1"})
    assert [r["doc_id"] for r in rows] == ["d0", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9", "e0"]
    assert rows[3][INPUT_ERROR] == "a.parquet row 5: column 'article' is null" and rows[0]["n"] == 0


def test_parquet_text_column_of_another_type_fails_every_row_without_reading_it(tmp_path):
    pq.write_table(pa.table({"article": [1, 2]}), tmp_path / "a.parquet")
    reader = readers.for_dataset(dataset(source="parquet", path=str(tmp_path / "a.parquet")), text_columns=["article"])
    assert reader.column_types() == {"article": pa.int64()}
    scan = reader.scan()
    assert scan.derived_ids and [(b.id, b.reason) for b in scan.bad_rows] == [("a.parquet:1", "column 'article' is int64, not text"), ("a.parquet:2", "column 'article' is int64, not text")]


def test_csv_rows_are_text_and_bad_rows_fail_alone(tmp_path):
    (tmp_path / "a.csv").write_bytes(b'\xef\xbb\xbfid,article,n\n1,"hello, world",3\n\n2,,4\n3,caf\xe9,5\n4,x\n5,"two\nlines",6\n')
    reader = readers.for_dataset(dataset(source="csv", path=str(tmp_path)), text_columns=["article"])
    assert reader.columns() == ["id", "article", "n"] and set(reader.column_types().values()) == {pa.string()}
    scan = reader.scan()
    assert [c.rows for c in scan.chunks] == [5] and list(scan.ids()) == ["1", "2", "3.csv:3".replace("3.csv", "a.csv"), "4", "5"]
    assert [(b.line, b.reason) for b in scan.bad_rows] == [(2, "column 'article' is empty"), (3, "not UTF-8 text"), (4, "2 fields where the header has 3")]
    rows = read_all(reader, scan, {"1"})
    assert [r["id"] for r in rows] == ["2", "a.csv:3", "4", "5"] and rows[-1]["article"] == "two\nlines" and rows[-1]["n"] == "6"
    assert reader.head(10) == [{"id": "1", "article": "hello, world", "n": "3"}, {"id": "5", "article": "two\nlines", "n": "6"}]


def test_synthetic_rows(tmp_path):
    reader = readers.for_dataset(dataset(source="synthetic", num_rows=5, input_tokens=3, limit=4), rows_per_chunk=3)
    scan = reader.scan()
    assert scan.rows == 4 and [c.ids for c in scan.chunks] == [[f"synthetic-{i:08d}" for i in range(3)], ["synthetic-00000003"]]
    assert read_all(reader, scan, {"synthetic-00000001"})[1] == {"id": "synthetic-00000002", "prompt": "hello hello hello 2", INPUT_ERROR: ""}
    assert reader.fingerprint()["num_rows"] == 5 and reader.fingerprint()["input_tokens"] == 3
    with pytest.raises(readers.DatasetError, match="dataset.num_rows"):
        readers.for_dataset(dataset(source="synthetic", num_rows=0, input_tokens=3))


def test_hub_datasets_read_the_hubs_parquet_export():
    reader = readers.for_dataset(typed_config("dataset=cnn_dailymail").dataset)  # builds the location only: no network until read
    assert isinstance(reader, readers.ParquetReader) and reader.limit == 1000
    assert reader.location.uri == "hf://datasets/abisee/cnn_dailymail@~parquet/3.0.0/test"
    assert reader.location.path == "datasets/abisee/cnn_dailymail@refs/convert/parquet/3.0.0/test"
    assert readers.hub_uri("org/data", None, "train") == "hf://datasets/org/data@~parquet/default/train"


def test_the_bundled_sample_is_read_at_once():
    sample = typed_config().dataset
    started = time.perf_counter()
    reader = readers.for_dataset(sample, text_columns=["article"])
    scan = reader.scan()
    assert time.perf_counter() - started < 0.5  # the default job must not get slower
    assert scan.rows == 32 and scan.bad_rows == [] and not scan.derived_ids and len(scan.chunks) == 1
    assert reader.columns() == ["id", "title", "article", "highlights"]
    assert len(reader.head(5)) == 5


def test_missing_path_and_empty_dataset_name_the_setting(tmp_path):
    with pytest.raises(readers.DatasetError, match=r"dataset.path=.*does not exist\. Fix:"):
        jsonl_reader(tmp_path / "nope.jsonl").scan()
    (tmp_path / "empty.jsonl").write_text("\n\n")
    for call in (lambda r: r.scan(), lambda r: r.columns()):
        with pytest.raises(readers.DatasetError, match=r"dataset.path=.*empty"):
            call(jsonl_reader(tmp_path / "empty.jsonl"))


def test_fingerprint_changes_when_a_file_or_the_limit_does(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", articles(3))
    before = jsonl_reader(tmp_path).fingerprint()
    assert json.loads(json.dumps(before)) == before and before == jsonl_reader(tmp_path).fingerprint()
    assert [f["path"] for f in before["files"]] == ["d.jsonl"] and before["limit"] is None
    assert jsonl_reader(tmp_path, limit=2).fingerprint() != before
    write_jsonl(path, articles(3, start=2))  # same size, new content
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert jsonl_reader(tmp_path).fingerprint() != before
    write_jsonl(tmp_path / "e.jsonl", articles(1))
    assert len(jsonl_reader(tmp_path).fingerprint()["files"]) == 2


# ---------------------------------------------------------------- object storage


def put(uri: str, payload: bytes) -> None:
    storage.resolve(uri).write_bytes(payload)


def test_jsonl_on_s3_bad_lines_other_files_and_derived_ids(s3):
    bucket = s3.create_bucket("readers-jsonl")
    with s3.environ():
        put(f"{bucket}/in/part-0.jsonl", b'{"document": "one"}\n{not json\n{"document": "caf\xe9"}\n')
        put(f"{bucket}/in/part-1.jsonl", b'\xef\xbb\xbf{"document": "two"}\n{"document": 5}\n')
        put(f"{bucket}/in/README.txt", b"notes")
        reader = jsonl_reader(f"{bucket}/in", text_columns=("document",))
        scan = reader.scan()
        assert scan.ignored_files == ["README.txt"] and scan.derived_ids
        assert list(scan.ids()) == ["part-0.jsonl:1", "part-0.jsonl:2", "part-0.jsonl:3", "part-1.jsonl:1", "part-1.jsonl:2"]
        assert [(b.where, b.reason.split(" (")[0]) for b in scan.bad_rows] == [
            ("part-0.jsonl:2", "not valid JSON"), ("part-0.jsonl:3", "not UTF-8 text"), ("part-1.jsonl:2", "column 'document' is int, not text"),
        ]
        rows = read_all(reader, scan, {"part-0.jsonl:1"})
        assert [r["id"] for r in rows] == list(scan.ids())[1:] and rows[2]["document"] == "two"
        fingerprint = reader.fingerprint()
        assert [f["path"] for f in fingerprint["files"]] == ["part-0.jsonl", "part-1.jsonl"] and all(f["size"] for f in fingerprint["files"])
        put(f"{bucket}/in/part-1.jsonl", b'{"document": "changed"}\n')
        assert jsonl_reader(f"{bucket}/in").fingerprint() != fingerprint


def test_parquet_and_csv_on_s3(s3, tmp_path):
    bucket = s3.create_bucket("readers-columnar")
    table = pa.table({"id": [f"r{i}" for i in range(5)], "article": ["a", "b", "", "d", "e"]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    with s3.environ():
        put(f"{bucket}/pq/t.parquet", (tmp_path / "t.parquet").read_bytes())
        put(f"{bucket}/csv/t.csv", b"id,article\nc1,x\nc2,\n")
        reader = readers.for_dataset(dataset(source="parquet", path=f"{bucket}/pq", limit=4), text_columns=["article"])
        scan = reader.scan()
        assert [c.rows for c in scan.chunks] == [2, 2] and [b.where for b in scan.bad_rows] == ["t.parquet:3"]
        assert [r["id"] for r in read_all(reader, scan, {"r0"})] == ["r1", "r2", "r3"]
        reader = readers.for_dataset(dataset(source="csv", path=f"{bucket}/csv"), text_columns=["article"])
        scan = reader.scan()
        assert [(r["id"], r[INPUT_ERROR]) for r in read_all(reader, scan)] == [("c1", ""), ("c2", "t.csv row 2: column 'article' is empty")]


def test_a_missing_s3_path_is_a_dataset_error(s3):
    bucket = s3.create_bucket("readers-missing")
    with s3.environ(), pytest.raises(readers.DatasetError, match="does not exist"):
        jsonl_reader(f"{bucket}/nope").scan()


# ---------------------------------------------------------------- Ray


def test_ray_dataset_yields_exactly_the_rows_not_done_from_local_disk_and_s3(s3, tmp_path):
    import ray

    bucket = s3.create_bucket("readers-ray")
    lines = [{"document": f"doc {i}"} for i in range(1, 8)] + [b"{broken"] + [{"document": f"doc {i}"} for i in range(9, 13)]
    local = write_jsonl(tmp_path / "in" / "part-0.jsonl", lines)
    write_jsonl(tmp_path / "in" / "part-1.jsonl", [{"document": "last"}])
    (tmp_path / "in" / "README.txt").write_text("ignored")
    with s3.environ():  # before ray.init: the workers inherit the driver's environment
        put(f"{bucket}/in/part-0.jsonl", local.read_bytes())
        put(f"{bucket}/in/part-1.jsonl", (tmp_path / "in" / "part-1.jsonl").read_bytes())
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for where in (tmp_path / "in", f"{bucket}/in"):
                reader = jsonl_reader(where, text_columns=("document",), rows_per_chunk=4, limit=12)
                scan = reader.scan()
                ids = list(scan.ids())
                assert len(ids) == 12 and ids[7] == "part-0.jsonl:8"
                done = set(ids[:4]) | {ids[5]}  # the first chunk whole, one row of the second
                rows = reader.ray_dataset(scan, done).take_all()
                got = [r["id"] for r in rows]
                assert sorted(got) == sorted(set(ids) - done) and len(got) == len(set(got)), where
                errors = {r["id"]: r[INPUT_ERROR] for r in rows}
                assert errors.pop("part-0.jsonl:8").startswith("part-0.jsonl line 8: not valid JSON")
                assert set(errors.values()) == {""}
                assert reader.ray_dataset(scan, set(ids)).count() == 0
                assert reader.ray_dataset(scan).schema().names == scan.schema.names
        finally:
            ray.shutdown()
