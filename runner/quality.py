"""Quality figures: ROUGE F-measures of each output against the row's reference text, and
their means over a run.

Per row on the workers (a pure function, no model or download: `rouge-score` ships its
tokenizer and Porter stemmer as code), per run in the driver from the written results.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Dict, Mapping, Optional

# Result columns, one per ROUGE variant: the F-measure, 0..1.
SCORE_COLUMNS = {"rouge1": "rouge1_f", "rouge2": "rouge2_f", "rougeL": "rougeL_f", "rougeLsum": "rougeLsum_f"}
UNSCORED = {column: None for column in SCORE_COLUMNS.values()}
QUALITY_ROWS = "quality_rows"

# ROUGE-Lsum compares summaries sentence by sentence, and rouge-score finds sentences only at
# newlines (its own splitter needs nltk's punkt data, a download). Model outputs are mostly one
# line, so sentence ends are turned into newlines here, for reference and output alike.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def sentence_lines(text: str) -> str:
    lines = []
    for line in text.splitlines():
        lines.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    # Stemming, as in the ROUGE reported for CNN/DailyMail: "votes" matches "voted".
    return rouge_scorer.RougeScorer(list(SCORE_COLUMNS), use_stemmer=True)


def scores(output: str, reference: Any) -> Dict[str, Optional[float]]:
    """ROUGE F-measures of one output; all None when the row has no reference text to score against."""
    if not isinstance(reference, str) or not reference.strip():
        return dict(UNSCORED)
    found = _scorer().score(sentence_lines(reference), sentence_lines(output or ""))
    return {column: float(found[name].fmeasure) for name, column in SCORE_COLUMNS.items()}


class Means:
    """Running sums of the score columns over result batches; rows without scores are skipped."""

    def __init__(self) -> None:
        self.sums = {column: 0.0 for column in SCORE_COLUMNS.values()}
        self.rows = 0
        self.seen = False

    def add(self, table: Mapping[str, list]) -> None:
        if SCORE_COLUMNS["rouge1"] not in table:
            return
        self.seen = True
        for i, first in enumerate(table[SCORE_COLUMNS["rouge1"]]):
            if first is None:
                continue
            self.rows += 1
            for column in self.sums:
                self.sums[column] += float(table[column][i])

    def figures(self) -> Dict[str, float]:
        """`rouge1_f_mean` ... and `quality_rows` (rows scored); nothing if no results hold scores."""
        if not self.seen:
            return {}
        figures: Dict[str, float] = {QUALITY_ROWS: self.rows}
        if self.rows:
            figures.update({f"{column}_mean": total / self.rows for column, total in self.sums.items()})
        return figures
