"""The contract check: every record and media file of the dataset; the run stops when too many are bad."""

from kfp.dsl import Dataset, Input, Output

from components import component


@component
def check(dataset: Input[Dataset], config: dict, workspace: str, report: Output[Dataset]) -> None:
    """Check the dataset against the contract; quarantine.jsonl and summary.json go to the report.

    Args:
        config: the check section of params.yaml (max_bad_fraction).
    """
    from pathlib import Path

    from avlops.flow import steps
    from avlops.flow.lineage import carried

    report.metadata.update(carried(dataset.metadata, report.uri))
    outcome = steps.check(Path(dataset.path), Path(report.path), config, workspace=workspace, uri=report.uri)
    report.metadata.update({k: outcome.summary[k] for k in ("kept", "quarantined", "bad_fraction")})
