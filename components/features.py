"""Features: clip metadata and preprocessing statistics published to the Feast store."""

from kfp.dsl import Dataset, Input, Markdown, Output

from components import component


@component
def features(
    dataset: Input[Dataset],
    shards: Input[Dataset],
    check_report: Input[Dataset],
    validation_report: Input[Dataset],
    config: dict,
    workspace: str,
    published: Output[Markdown],
) -> None:
    """Materialise the clip_metadata and clip_stats feature views into the store the config names.

    Args:
        config: the features section of params.yaml (repo_dir, registry, online_store, offline_store, ...).
        check_report: the check step's report; its quarantined clips are not published.
        validation_report: the validate step's report; likewise.
    """
    from pathlib import Path

    from avlops.flow import steps
    from avlops.flow.lineage import carried

    published.metadata.update(carried(shards.metadata, published.uri))
    result = steps.features(
        Path(dataset.path), Path(shards.path), config, reports=[Path(check_report.path), Path(validation_report.path)],
        workspace=workspace, uri=published.uri,
    )  # fmt: skip
    rows = ", ".join(f"{view}: {n} rows" for view, n in result["rows"].items())
    dropped = f"; {len(result['dropped'])} quarantined clip(s) left out" if result["dropped"] else ""
    Path(published.path).write_text(f"Feast store `{result['repo_dir']}`: {rows}{dropped}\n", encoding="utf-8")
