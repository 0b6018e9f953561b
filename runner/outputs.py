"""What a result row gets beyond the generation: the parsed structured output
(runner.structured) and the ROUGE scores against the row's reference (runner.quality).

Built once from the config in the driver, applied to every row on the workers. Every row gets
the same columns, failed rows included (as nulls): rows in one Arrow block share a schema, and
`typed` gives every block the same column types, so that a block whose rows all failed (all
nulls) does not write a file that the others cannot be read with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from runner import quality, structured
from runner.results import ERROR_COLUMN, GENERATION_COLUMNS
from runner.schema import RunConfig


@dataclass(frozen=True)
class RowOutputs:
    spec: Optional[structured.Spec]
    reference_column: Optional[str]
    # The parsed field that ROUGE scores (a structured prompt); None scores generated_text.
    score_field: Optional[str]
    max_tokens: int

    @property
    def scored(self) -> bool:
        # A label or a JSON document against a prose reference says nothing: a structured
        # prompt is scored only through the field it names.
        return bool(self.reference_column) and (self.spec is None or bool(self.score_field))

    def columns(self) -> Dict[str, str]:
        """Added result columns -> Arrow type name."""
        columns = dict(self.spec.columns) if self.spec else {}
        if self.scored:
            columns.update({column: "float64" for column in quality.SCORE_COLUMNS.values()})
        return columns

    def apply(self, out: Dict[str, Any], row: Mapping[str, Any]) -> None:
        """Add the parsed fields and scores to a shaped result row; an unusable structured
        output sets the row's error (its text is kept, to show what came back)."""
        if self.spec is not None:
            if out[ERROR_COLUMN]:
                out.update({name: None for name in self.spec.columns})
            else:
                values, error = structured.parse(self.spec, out["generated_text"], out["num_generated_tokens"], self.max_tokens)
                out.update(values)
                out[ERROR_COLUMN] = error
        if self.scored:
            text = out.get(self.score_field) if self.score_field else out["generated_text"]
            out.update(quality.UNSCORED if out[ERROR_COLUMN] else quality.scores(text, row.get(self.reference_column)))

    def typed(self, table):
        """The block with the added columns cast to their types (pyarrow batches)."""
        for name, kind in self.columns().items():
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name, table[name].cast(_arrow_type(kind)))
        return table

    def column_problems(self, original_columns: Sequence[str], dataset_name: str) -> List[str]:
        """Clashes with the data's columns, found once the data's columns are known."""
        problems = []
        if self.reference_column and self.reference_column not in original_columns:
            problems.append(
                f"dataset.reference_column={self.reference_column!r} is not a column of dataset={dataset_name} "
                f"(columns: {', '.join(original_columns)}). Fix: dataset.reference_column=<the column of reference "
                "texts>, or dataset.reference_column=null to skip the quality figures"
            )
        taken = {*original_columns, *GENERATION_COLUMNS}
        for name in self.spec.columns if self.spec else ():
            if name in taken:
                source = "prompt.choices writes" if self.spec.choices is not None else "prompt.json_schema's field becomes"
                problems.append(
                    f"{source} result column {name!r}, which dataset={dataset_name} or the runner already has. "
                    "Fix: rename the field in the schema (or the data's column)"
                )
        return problems


def _arrow_type(kind: str):
    import pyarrow as pa

    if kind.startswith("list<"):
        return pa.list_(_arrow_type(kind[len("list<"):-1]))
    return {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), structured.JSON_TEXT: pa.string()}[kind]


def from_config(config: RunConfig) -> RowOutputs:
    """Raises structured.StructuredConfigError naming the key and the fix."""
    prompt_cfg = config.prompt
    spec = structured.spec(prompt_cfg)
    score_field = prompt_cfg.score_field
    if score_field:
        if spec is None or spec.schema is None:
            raise structured.StructuredConfigError(
                f"prompt.score_field={score_field!r} names a field of prompt.json_schema, which is not set. "
                "Fix: prompt.score_field=null (free text is scored whole)"
            )
        if spec.columns.get(score_field) != "string":
            strings = [name for name, kind in spec.columns.items() if kind == "string"]
            raise structured.StructuredConfigError(
                f"prompt.score_field={score_field!r} is not a text field of prompt.json_schema. "
                f"Fix: one of {', '.join(strings) or '(none: add a string field)'}"
            )
    return RowOutputs(
        spec=spec, reference_column=config.dataset.reference_column or None,
        score_field=score_field or None, max_tokens=prompt_cfg.max_tokens,
    )


def config_problems(config: RunConfig) -> List[str]:
    """What from_config would refuse, as a list (for the checks before the run)."""
    try:
        from_config(config)
    except structured.StructuredConfigError as error:
        return [str(error)]
    return []
