"""Evaluation and blessing: retrieval and captioning as the papers measure them, the report, and the verdict."""

from typing import NamedTuple

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components import component


@component
def evaluate(
    model: Input[Model],
    shards: Input[Dataset],
    dataset: Input[Dataset],
    check_report: Input[Dataset],
    config: dict,
    workspace: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    evaluation: Output[Dataset],
    validation_report: Input[Dataset] = None,
) -> NamedTuple("Blessing", [("blessed", bool), ("reasons", str)]):
    """Evaluate on the configured split and judge the blessing gate.

    Args:
        config: the evaluate section of params.yaml (split, retrieval, captioning, beam_size, bless thresholds, ...).
        check_report: the check step's report; its quarantined clips are not evaluated on.
        validation_report: the validate step's report, when the pipeline validates; likewise.
    """
    import json
    from pathlib import Path

    from avlops.flow import steps
    from avlops.flow.lineage import carried

    evaluation.metadata.update(carried(dataset.metadata, evaluation.uri))  # the data evaluated on
    values, verdict, page = steps.evaluate(
        Path(model.path), Path(shards.path), Path(dataset.path), Path(evaluation.path), config,
        reports=[Path(r.path) for r in (check_report, validation_report) if r is not None],
        workspace=workspace, uri=evaluation.uri,
    )  # fmt: skip
    for name in steps.headline(values):
        metrics.log_metric(name, values[name])
    # also as a file: kfp.local treats an output without one as missing and never reuses the task from its cache
    Path(metrics.path).write_text(json.dumps(values, indent=1, sort_keys=True), encoding="utf-8")
    steps.copy_report(page, Path(report.path))
    evaluation.metadata.update({"blessed": verdict["blessed"]})
    return bool(verdict["blessed"]), "; ".join(verdict["reasons"])
