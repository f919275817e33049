"""Registration: a blessed model into the registry's Triton model repository, with its lineage on the model card;
and a registered version back as a model (for evaluating it or encoding a new catalogue)."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Model, Output

from components import component


@component
def register(
    model: Input[Model],
    evaluation: Input[Dataset],
    catalogue: Input[Dataset],
    shards: Input[Dataset],
    config: dict,
    workspace: str,
    registered: Output[Model],
) -> NamedTuple("Registered", [("version", int), ("repository", str)]):
    """Register the model (or reuse the version holding the same weights); the card is the output.

    Args:
        config: the registry section of params.yaml (repository, alias, limits, batching, ...).
    """
    import json
    import shutil
    from pathlib import Path

    from avlops.flow import steps
    from avlops.flow.lineage import Lineage, carried

    registered.metadata.update(carried(model.metadata, registered.uri))
    version, new, aliases = steps.register(
        Path(model.path), Path(evaluation.path), Path(catalogue.path), Path(shards.path), config,
        Lineage.from_metadata(model.metadata), workspace=workspace, uri=registered.uri,
    )  # fmt: skip
    repository = str(Path(config.get("repository", "artifacts/registry")).resolve())
    shutil.copy2(Path(repository) / "versions" / str(version) / "card.json", registered.path)
    registered.metadata.update({"version": version, "new": new, "aliases": json.dumps(aliases)})
    return version, repository


@component
def fetch_version(repository: str, version: int, workspace: str, model: Output[Model]) -> dict:
    """A registered version as a checkpoint folder; returns the preprocess config it was trained with.

    Args:
        repository: the registry folder.
        version: the registered version.
    """
    from pathlib import Path

    from avlops.flow import steps

    model.metadata.update({"registry": repository, "version": version})
    return steps.fetch_version(repository, version, Path(model.path), workspace=workspace, uri=model.uri)
