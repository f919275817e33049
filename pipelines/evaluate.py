"""``evaluate``: a registered version on a DVC dataset, to a report and a blessing verdict; nothing is trained."""

from typing import Any

from kfp import dsl
from kfp.dsl import base_component

from components.evaluate import evaluate
from components.gate import gate
from components.summary import summary
from pipelines.options import ClusterOptions, configure
from pipelines.steps import checked_dataset, version_on_dataset

__all__ = ["STAGES", "build"]

STAGES = ["resolve", "dataset", "check", "model", "preprocess", "evaluate", "gate-blessing"]


def build(defaults: dict[str, Any], opts: ClusterOptions) -> base_component.BaseComponent:
    @dsl.pipeline(
        name="avlops-evaluate",
        description="A registered model version evaluated on a DVC dataset as the papers measure it: report, metrics "
        "and the blessing verdict (against thresholds and the champion), no training.",
        pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size="1Gi")),
    )
    def evaluate_version(
        version: int,
        dataset: dict = defaults["dataset"],
        repository: str = defaults["repository"],
        check_config: dict = defaults["check"],
        evaluate_config: dict = defaults["evaluate"],
    ) -> None:
        """Evaluate a registered version.

        Args:
            version: the registered version to evaluate.
            dataset: the DVC dataset: repo (git URL or path), path (folder with manifest.jsonl), rev, remote_url.
            repository: the registry folder (on the shared volume on a cluster).
            check_config: params.yaml [check]: max_bad_fraction.
            evaluate_config: params.yaml [evaluate]: split, tasks, beam_size, bless (thresholds, champion).
        """
        ws = dsl.WORKSPACE_PATH_PLACEHOLDER
        done = configure(summary(pipeline="evaluate", stages=STAGES, workspace=ws), "summary", opts, cache=False)
        with dsl.ExitHandler(done, name="evaluate"):
            ds, checked = checked_dataset(dataset, check_config, ws, opts)
            model, shards = version_on_dataset(repository, version, ds, checked, ws, opts)
            ev = evaluate(
                model=model, shards=shards, dataset=ds, check_report=checked.outputs["report"],
                config=evaluate_config, workspace=ws,
            )  # fmt: skip
            configure(ev, "evaluate", opts, cache=False)
            blessed = gate(report=ev.outputs["evaluation"], kind="blessing", stop=True, workspace=ws)
            configure(blessed, "gate", opts, cache=False).set_display_name("gate-blessing")

    return evaluate_version
