"""The search catalogue: every clip of the data encoded by the model, and its publication to Feast."""

from kfp.dsl import Dataset, Input, Markdown, Model, Output

from components import component


@component
def catalogue(
    model: Input[Model],
    shards: Input[Dataset],
    check_report: Input[Dataset],
    workspace: str,
    catalogue: Output[Dataset],
    validation_report: Input[Dataset] = None,
) -> int:
    """Build the catalogue of the shards' clips with the model; returns its clip count.

    Args:
        check_report: the check step's report; its quarantined clips are left out of the catalogue.
        validation_report: the validate step's report, when the pipeline validates; likewise.
    """
    from pathlib import Path

    from avlops.flow import steps
    from avlops.flow.lineage import carried

    catalogue.metadata.update(carried(shards.metadata, catalogue.uri))  # the clips it holds
    return steps.catalogue(
        Path(model.path), Path(shards.path), Path(catalogue.path),
        reports=[Path(r.path) for r in (check_report, validation_report) if r is not None],
        workspace=workspace, uri=catalogue.uri,
    )  # fmt: skip


@component
def publish(
    catalogue: Input[Dataset],
    version: int,
    config: dict,
    workspace: str,
    published: Output[Markdown],
) -> None:
    """Publish the catalogue's clip embeddings, as registered version `version`'s, to Feast (view clip_embedding).

    Args:
        config: the features section of params.yaml (the store).
    """
    from pathlib import Path

    from avlops.flow import steps
    from avlops.flow.lineage import carried

    published.metadata.update(carried(catalogue.metadata, published.uri))
    n = steps.publish(Path(catalogue.path), version, config, workspace=workspace, uri=published.uri)
    Path(published.path).write_text(f"{n} clip embeddings of version {version} published to Feast\n", encoding="utf-8")
