"""Validation: Great Expectations suites over the manifest and the preprocessing statistics, with Data Docs."""

from kfp.dsl import HTML, Dataset, Input, Output

from components import component


@component
def validate(
    dataset: Input[Dataset],
    shards: Input[Dataset],
    config: dict,
    workspace: str,
    report: Output[Dataset],
    data_docs: Output[HTML],
) -> bool:
    """Validate the dataset; the verdict is the output (the gate step acts on it), Data Docs are the HTML artifact.

    Args:
        config: the validation section of params.yaml (max_bad_fraction, ranges, leak_splits, ...).
    """
    from pathlib import Path

    from avlops.flow import steps
    from avlops.flow.lineage import carried

    report.metadata.update(carried(shards.metadata, report.uri))
    summary = steps.validate(
        Path(dataset.path), Path(shards.path), Path(report.path), Path(data_docs.path), config,
        workspace=workspace, uri=report.uri,
    )  # fmt: skip
    report.metadata.update({k: summary[k] for k in ("passed", "records", "quarantined", "bad_fraction")})
    return bool(summary["passed"])
