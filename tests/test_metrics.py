import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner import metrics, storage
from runner.schema import HardwareConfig

HW = HardwareConfig(price_per_hour=3.6)


def write_results(folder, rows):
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[: len(rows) // 2]), folder / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[len(rows) // 2 :]), folder / "b.parquet")


def test_startup_and_steady_state_are_split_by_the_first_request(tmp_path):
    # Engine ready at t=110 (first request starts); 4 rows finish between 112 and 120.
    rows = [
        {"num_input_tokens": 100, "num_generated_tokens": 10, "latency_s": 2.0, "ttft_s": 0.5, "finished_at": 112.0},
        {"num_input_tokens": 100, "num_generated_tokens": 10, "latency_s": 4.0, "ttft_s": 0.5, "finished_at": 115.0},
        {"num_input_tokens": 100, "num_generated_tokens": 10, "latency_s": 6.0, "ttft_s": None, "finished_at": 118.0},
        {"num_input_tokens": 100, "num_generated_tokens": 10, "latency_s": 5.0, "ttft_s": 1.5, "finished_at": 120.0},
    ]
    write_results(tmp_path / "r", rows)
    figures = metrics.compute(storage.resolve(str(tmp_path / "r")), started_at=100.0, finished_at=125.0, hw=HW, replicas=2)
    assert figures["rows"] == 4 and figures["wall_s"] == 25.0
    assert figures["startup_s"] == pytest.approx(10.0)
    assert figures["generation_s"] == pytest.approx(10.0)
    assert figures["rows_per_s"] == pytest.approx(4 / 25)
    assert figures["steady_output_tokens_per_s"] == pytest.approx(40 / 10)
    assert figures["total_tokens_per_s"] == pytest.approx(440 / 25)
    assert figures["latency_p50_s"] == pytest.approx(4.5)
    # In the engine: 110-112, 111-115, 112-118, 115-120; the third starts as the first ends.
    assert figures["engine_requests_peak"] == 2
    assert figures["ttft_mean_s"] == pytest.approx(2.5 / 3)
    # 2 replicas x $3.60/h x 25 s = $0.05
    assert figures["cost_usd"] == pytest.approx(0.05)
    assert figures["cost_per_1m_output_tokens_usd"] == pytest.approx(0.05 / 40 * 1e6)
    assert figures["cost_per_1k_rows_usd"] == pytest.approx(0.05 / 4 * 1e3)


def test_jsonl_results_are_measured_too(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    row = {"num_input_tokens": 7, "num_generated_tokens": 3, "latency_s": 1.0, "ttft_s": 0.1, "finished_at": 11.0}
    (folder / "part.json").write_text(json.dumps(row) + "\n")
    figures = metrics.compute(storage.resolve(str(folder)), started_at=0.0, finished_at=12.0, hw=HardwareConfig(price_per_hour=0.0), replicas=1)
    assert figures["rows"] == 1 and figures["output_tokens"] == 3 and figures["startup_s"] == pytest.approx(10.0)


@pytest.mark.parametrize("missing", ["latency_s", "ttft_s", "num_generated_tokens", "finished_at"])
def test_results_missing_a_column_name_it_and_the_folder(tmp_path, missing):
    row = {"num_input_tokens": 7, "num_generated_tokens": 3, "latency_s": 1.0, "ttft_s": 0.1, "finished_at": 11.0}
    del row[missing]
    write_results(tmp_path / "r", [row, row])
    with pytest.raises(metrics.MetricsError) as caught:
        metrics.compute(storage.resolve(str(tmp_path / "r")), started_at=0.0, finished_at=12.0, hw=HW, replicas=1)
    message = str(caught.value)
    assert missing in message and str(tmp_path / "r") in message and "Fix:" in message


def test_a_run_whose_every_row_failed_has_no_results_and_zero_rows(tmp_path):
    (tmp_path / "r").mkdir()
    figures = metrics.compute(storage.resolve(str(tmp_path / "r")), started_at=0.0, finished_at=12.0, hw=HW, replicas=1)
    assert figures["rows"] == 0 and figures["wall_s"] == 12.0
