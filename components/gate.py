"""A gate: read a verdict (validation or blessing) from its report. Never cached, so every run records the verdict
that decides which steps run after it, also when the step that judged was reused from the cache. The validation gate
stops the run (its Data Docs are already an artifact); the blessing gate's output drives a ``dsl.If``."""

from kfp.dsl import Dataset, Input, Output

from components import component


@component
def gate(report: Input[Dataset], kind: str, stop: bool, workspace: str, verdict: Output[Dataset]) -> bool:
    """Pass or fail a gate.

    Args:
        kind: validation (the validate step's report) or blessing (the evaluate step's output folder).
        stop: a failed gate fails the task (the run stops here) instead of returning False.
    """
    import json
    from pathlib import Path

    from avlops.flow import steps

    verdict.metadata.update({"gate": kind})
    result = steps.gate(kind, Path(report.path), stop=stop, workspace=workspace, uri=verdict.uri)
    with open(verdict.path, "w", encoding="utf-8") as fh:
        json.dump({"gate": result.name, "passed": result.passed, "reasons": result.reasons}, fh, indent=1)
    verdict.metadata.update({"passed": result.passed, "reasons": "; ".join(result.reasons)})
    return result.passed
