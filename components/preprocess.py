"""Preprocessing: frames, Kaldi fbank slices and CLIP BPE tokens into safetensors shards."""

from kfp.dsl import Dataset, Input, Output

from components import component


@component
def preprocess(dataset: Input[Dataset], config: dict, workspace: str, shards: Output[Dataset]) -> None:
    """Preprocess every clip into shards (index.json, stats.parquet, quarantine.jsonl).

    Args:
        config: the preprocess section of params.yaml (frames, resolution, sample_rate, dtype, workers, ...).
    """
    from pathlib import Path

    from avlops.flow import steps
    from avlops.flow.lineage import carried

    shards.metadata.update(carried(dataset.metadata, shards.uri))
    summary = steps.preprocess(Path(dataset.path), Path(shards.path), config, workspace=workspace, uri=shards.uri)
    shards.metadata.update(summary)
