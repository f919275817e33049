"""``catalogue_refresh``: a registered version encodes a DVC dataset's clips and publishes them to Feast."""

from typing import Any

from kfp import dsl
from kfp.dsl import base_component

from components.catalogue import catalogue, publish
from components.summary import summary
from pipelines.options import ClusterOptions, configure
from pipelines.steps import checked_dataset, version_on_dataset

__all__ = ["STAGES", "build"]

STAGES = ["resolve", "dataset", "check", "model", "preprocess", "catalogue", "publish"]


def build(defaults: dict[str, Any], opts: ClusterOptions) -> base_component.BaseComponent:
    @dsl.pipeline(
        name="avlops-catalogue-refresh",
        description="Encode a DVC dataset's clips with a registered version and publish the embeddings to the "
        "Feast store (view clip_embedding).",
        pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size="1Gi")),
    )
    def catalogue_refresh(
        version: int,
        dataset: dict = defaults["dataset"],
        repository: str = defaults["repository"],
        check_config: dict = defaults["check"],
        features_config: dict = defaults["features"],
    ) -> None:
        """Refresh a version's catalogue in the feature store.

        Args:
            version: the registered version whose encoders embed the clips.
            dataset: the DVC dataset: repo (git URL or path), path (folder with manifest.jsonl), rev, remote_url.
            repository: the registry folder (on the shared volume on a cluster).
            check_config: params.yaml [check]: max_bad_fraction.
            features_config: params.yaml [features]: the Feast store.
        """
        ws = dsl.WORKSPACE_PATH_PLACEHOLDER
        done = configure(
            summary(pipeline="catalogue_refresh", stages=STAGES, workspace=ws), "summary", opts, cache=False
        )
        with dsl.ExitHandler(done, name="catalogue-refresh"):
            ds, checked = checked_dataset(dataset, check_config, ws, opts)
            model, shards = version_on_dataset(repository, version, ds, checked, ws, opts)
            cat = catalogue(model=model, shards=shards, check_report=checked.outputs["report"], workspace=ws)
            configure(cat, "catalogue", opts, cache=False)
            pub = publish(catalogue=cat.outputs["catalogue"], version=version, config=features_config, workspace=ws)
            configure(pub, "publish", opts, cache=False)

    return catalogue_refresh
