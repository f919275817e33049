"""``pretrain``: a DVC dataset reference to a blessed, registered, published and served model."""

from typing import Any

from kfp import dsl
from kfp.dsl import base_component

from components.catalogue import catalogue, publish
from components.deploy import deploy
from components.evaluate import evaluate
from components.features import features
from components.gate import gate
from components.preprocess import preprocess
from components.register import register
from components.summary import summary
from components.train import train
from components.validate import validate
from pipelines.options import ClusterOptions, configure
from pipelines.steps import checked_dataset

__all__ = ["STAGES", "build"]

STAGES = [
    "resolve", "dataset", "check", "preprocess", "validate", "gate-validation", "features", "train", "evaluate",
    "gate-blessing", "catalogue", "register", "publish", "deploy",
]  # fmt: skip


def build(defaults: dict[str, Any], opts: ClusterOptions) -> base_component.BaseComponent:
    """The pipeline, its parameters defaulting to ``defaults`` (the ``params.yaml`` sections and a dataset)."""

    @dsl.pipeline(
        name="avlops-pretrain",
        description="DVC dataset -> check -> preprocess -> validate -> features -> train -> evaluate + bless -> "
        "register -> publish -> serve: a blessed, registered model of the CLIP4VLA / VALOR family.",
        pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size="1Gi")),
    )
    def pretrain(
        dataset: dict = defaults["dataset"],
        check_config: dict = defaults["check"],
        preprocess_config: dict = defaults["preprocess"],
        validation_config: dict = defaults["validation"],
        features_config: dict = defaults["features"],
        train_config: dict = defaults["train"],
        evaluate_config: dict = defaults["evaluate"],
        registry_config: dict = defaults["registry"],
        deploy_config: dict = defaults["deploy"],
        train_launcher: str = "auto",
        train_procs: int = 1,
        trainjob: dict = defaults["trainjob"],
        serve: bool = True,
    ) -> None:
        """Pretrain, evaluate, bless, register and serve a model.

        Args:
            dataset: the DVC dataset: repo (git URL or path), path (folder with manifest.jsonl), rev, remote_url.
            check_config: params.yaml [check]: max_bad_fraction.
            preprocess_config: params.yaml [preprocess]: frames, resolution, sample_rate, dtype, workers, ...
            validation_config: params.yaml [validation]: max_bad_fraction, value ranges, leak_splits.
            features_config: params.yaml [features]: the Feast store (repo_dir, registry, online/offline stores).
            train_config: params.yaml [train]: model, batch_size, epochs, objective, optimizer, schedule, ...
            evaluate_config: params.yaml [evaluate]: split, tasks, beam_size, bless (thresholds, champion).
            registry_config: params.yaml [registry]: repository, alias, limits, batching.
            deploy_config: params.yaml [deploy]: mode serve (serve and query) or rollout (a canary rollout of the
                registered version on the local platform; target kubernetes renders the Argo Rollout update).
            train_launcher: auto (a TrainJob on Kubernetes when trainjob.num_nodes > 1), local (torchrun), trainjob.
            train_procs: processes per node for a torchrun run in the task.
            trainjob: the Kubeflow Trainer TrainJob: image, pvc, num_nodes, procs_per_node, gpus, cpu, memory, ...
            serve: run the deploy hand-off (what it does: deploy_config.mode).
        """
        ws = dsl.WORKSPACE_PATH_PLACEHOLDER
        done = configure(summary(pipeline="pretrain", stages=STAGES, workspace=ws), "summary", opts, cache=False)
        with dsl.ExitHandler(done, name="pretrain"):
            ds, checked = checked_dataset(dataset, check_config, ws, opts)
            pre = preprocess(dataset=ds, config=preprocess_config, workspace=ws).after(checked)
            shards = configure(pre, "preprocess", opts, cache=True).outputs["shards"]
            val = validate(dataset=ds, shards=shards, config=validation_config, workspace=ws)
            configure(val, "validate", opts, cache=True)
            # the validation gate stops the run when it fails: nothing below it starts
            valid = gate(report=val.outputs["report"], kind="validation", stop=True, workspace=ws)
            configure(valid, "gate", opts, cache=False).set_display_name("gate-validation")
            feats = features(
                dataset=ds, shards=shards, check_report=checked.outputs["report"],
                validation_report=val.outputs["report"], config=features_config, workspace=ws,
            ).after(valid)  # fmt: skip
            configure(feats, "features", opts, cache=False)
            trained = train(
                shards=shards, check_report=checked.outputs["report"], validation_report=val.outputs["report"],
                config=train_config, launcher=train_launcher, procs=train_procs,
                trainjob=trainjob, workspace=ws,
            ).after(valid)  # fmt: skip
            model = configure(trained, "train", opts, cache=True).outputs["model"]
            ev = evaluate(
                model=model, shards=shards, dataset=ds, check_report=checked.outputs["report"],
                validation_report=val.outputs["report"], config=evaluate_config, workspace=ws,
            )  # fmt: skip
            configure(ev, "evaluate", opts, cache=True)
            blessed = gate(report=ev.outputs["evaluation"], kind="blessing", stop=False, workspace=ws)
            configure(blessed, "gate", opts, cache=False).set_display_name("gate-blessing")
            cat = catalogue(
                model=model, shards=shards, check_report=checked.outputs["report"],
                validation_report=val.outputs["report"], workspace=ws,
            )  # fmt: skip
            configure(cat, "catalogue", opts, cache=True)
            with dsl.If(blessed.outputs["Output"] == True, name="blessed"):  # noqa: E712 (a KFP condition)
                reg = register(
                    model=model, evaluation=ev.outputs["evaluation"], catalogue=cat.outputs["catalogue"],
                    shards=shards, config=registry_config, workspace=ws,
                )  # fmt: skip
                configure(reg, "register", opts, cache=False)
                pub = publish(
                    catalogue=cat.outputs["catalogue"], version=reg.outputs["version"], config=features_config,
                    workspace=ws,
                )  # fmt: skip
                configure(pub, "publish", opts, cache=False)
                with dsl.If(serve == True, name="serve"):  # noqa: E712
                    # Cached on (repository, version, dataset, deploy_config): a version is handed off once.
                    hand_off = deploy(
                        repository=reg.outputs["repository"], version=reg.outputs["version"], dataset=ds,
                        config=deploy_config, workspace=ws,
                    )  # fmt: skip
                    configure(hand_off, "deploy", opts, cache=True).after(pub)

    return pretrain
