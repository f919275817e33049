"""The deploy hand-off: serve the registered version and query it (locally a Triton server that starts, answers a
search and a caption over gRPC, and stops). The rollout of a new version plugs in here."""

from kfp.dsl import Dataset, Input, Markdown, Output

from components import component


@component
def deploy(repository: str, version: int, dataset: Input[Dataset], workspace: str, answers: Output[Markdown]) -> str:
    """Serve the version, search with a test clip's caption and caption that clip; returns the caption.

    Args:
        repository: the registry folder.
        version: the registered version to serve.
    """
    from pathlib import Path

    from avlops.flow import steps

    result = steps.deploy(
        repository, version, Path(dataset.path), Path(answers.path), workspace=workspace, uri=answers.uri
    )
    answers.metadata.update({k: v for k, v in result.items() if k != "hits"})
    return str(result["caption"])
