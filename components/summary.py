"""The exit handler's step: a Markdown summary of the run, written even when a task failed."""

from kfp.dsl import Markdown, Output, PipelineTaskFinalStatus

from components import component


@component
def summary(
    pipeline: str,
    stages: list,
    workspace: str,
    status: PipelineTaskFinalStatus,
    summary: Output[Markdown],
) -> None:
    """Write what ran, what was reused from the cache, what was skipped and why, and what failed."""
    from pathlib import Path

    from avlops.flow.ledger import Ledger
    from avlops.flow.lineage import run_key
    from avlops.flow.summary import render_summary

    run = run_key(summary.uri)
    text, statuses = render_summary(
        Ledger(workspace, run), stages, pipeline=pipeline, run=run, state=status.state, error=status.error_message or ""
    )
    Path(summary.path).write_text(text, encoding="utf-8")
    summary.metadata.update({"state": status.state, "statuses": statuses})
    print(text)
