"""ROUGE per row and its means per run, against values worked out by hand."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner import metrics, quality, storage
from runner.schema import HardwareConfig


def test_rouge_of_one_word_swapped():
    # reference: the cat sat on the mat; output: the cat lay on the mat (6 tokens each)
    # unigrams in common (with counts): the x2, cat, on, mat = 5 -> P = R = F = 5/6
    # bigrams: the-cat, on-the, the-mat of 5 each -> 3/5
    # longest common subsequence: the cat on the mat = 5 -> 5/6; one sentence, so Lsum = L
    found = quality.scores("the cat lay on the mat", "the cat sat on the mat")
    assert found == pytest.approx({"rouge1_f": 5 / 6, "rouge2_f": 3 / 5, "rougeL_f": 5 / 6, "rougeLsum_f": 5 / 6})


def test_rouge_with_stemming_and_two_sentences_in_another_order():
    # Lower-cased, Porter-stemmed when longer than 3 letters:
    # reference: polic arrest two men | the bridg was close            (8 tokens, 2 sentences)
    # output:    the bridg close | two men were arrest by polic         (9 tokens, 2 sentences)
    # ROUGE-1: polic arrest two men the bridg close = 7 ("was" != "were"): F = 2*7/(8+9) = 14/17
    # ROUGE-2: the-bridg, two-men = 2 of 7 and 8 bigrams: F = 2*2/(7+8) = 4/15
    # ROUGE-L: one sequence each; longest common: the bridg close = 3: F = 2*3/(8+9) = 6/17
    # ROUGE-Lsum: per reference sentence, the union of its LCS with each output sentence:
    #   "polic arrest two men" -> {two, men} = 2; "the bridg was close" -> {the, bridg, close} = 3
    #   5 hits: P = 5/9, R = 5/8, F = 2*5/(8+9) = 10/17
    found = quality.scores("The bridge closed. Two men were arrested by police.", "Police arrested two men. The bridge was closed.")
    assert found == pytest.approx({"rouge1_f": 14 / 17, "rouge2_f": 4 / 15, "rougeL_f": 6 / 17, "rougeLsum_f": 10 / 17})


def test_sentences_become_lines_for_rouge_lsum():
    assert quality.sentence_lines("One. Two!  Three?\nFour 3.5 percent.") == "One.\nTwo!\nThree?\nFour 3.5 percent."


@pytest.mark.parametrize("reference", [None, "", "   ", 7])
def test_no_reference_text_no_scores(reference):
    assert quality.scores("an output", reference) == quality.UNSCORED


def test_an_empty_output_scores_zero():
    assert quality.scores("", "a reference")["rouge1_f"] == 0.0


def test_means_skip_unscored_rows_and_count_the_scored():
    means = quality.Means()
    means.add({"rouge1_f": [0.5, None], "rouge2_f": [0.2, None], "rougeL_f": [0.4, None], "rougeLsum_f": [0.4, None]})
    means.add({"rouge1_f": [0.3], "rouge2_f": [0.0], "rougeL_f": [0.2], "rougeLsum_f": [0.3]})
    assert means.figures() == pytest.approx(
        {"quality_rows": 2, "rouge1_f_mean": 0.4, "rouge2_f_mean": 0.1, "rougeL_f_mean": 0.3, "rougeLsum_f_mean": 0.35}
    )
    assert quality.Means().figures() == {}  # no score columns at all: no quality figures


def test_metrics_carry_the_quality_means(tmp_path):
    base = {"num_input_tokens": 10, "num_generated_tokens": 5, "latency_s": 1.0, "ttft_s": 0.1, "finished_at": 11.0}
    folder = tmp_path / "results"
    folder.mkdir()
    scored = [dict(base, rouge1_f=0.6, rouge2_f=0.3, rougeL_f=0.5, rougeLsum_f=0.55), dict(base, rouge1_f=0.2, rouge2_f=0.1, rougeL_f=0.1, rougeLsum_f=0.15)]
    pq.write_table(pa.Table.from_pylist(scored), folder / "a.parquet")
    unscored = dict(base, rouge1_f=None, rouge2_f=None, rougeL_f=None, rougeLsum_f=None)
    pq.write_table(pa.Table.from_pylist([unscored], schema=pa.Table.from_pylist(scored).schema), folder / "b.parquet")
    figures = metrics.compute(storage.resolve(str(folder)), 0.0, 12.0, HardwareConfig(price_per_hour=0.0), 1)
    assert figures["rows"] == 3 and figures["quality_rows"] == 2
    assert figures["rouge1_f_mean"] == pytest.approx(0.4) and figures["rougeLsum_f_mean"] == pytest.approx(0.35)
