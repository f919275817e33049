"""Compile the pipelines to the YAML a user uploads to Kubeflow, and check each one parses strictly into KFP's
``PipelineSpec`` (and ``PlatformSpec``, which holds the Kubernetes settings) protobufs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from kfp import compiler
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.build import BUILDERS, build_pipeline
from pipelines.options import ClusterOptions

__all__ = ["Compiled", "compile_all", "compile_pipeline", "parse_compiled"]


@dataclass(frozen=True)
class Compiled:
    name: str
    path: Path
    spec: pipeline_spec_pb2.PipelineSpec
    platform: pipeline_spec_pb2.PlatformSpec | None


def parse_compiled(path: Path) -> tuple[pipeline_spec_pb2.PipelineSpec, pipeline_spec_pb2.PlatformSpec | None]:
    """The compiled YAML's documents as protobufs; an unknown field or a wrong type is an error."""
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    if not docs or len(docs) > 2:
        raise ValueError(f"{path}: expected a PipelineSpec and at most a PlatformSpec, got {len(docs)} documents")
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    platform = None
    if len(docs) == 2:
        platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    return spec, platform


def _set_image(path: Path, image: str) -> None:
    """Every component runs on ``image`` (the project's image, which has avlops installed)."""
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    for executor in docs[0].get("deploymentSpec", {}).get("executors", {}).values():
        if "container" in executor:
            executor["container"]["image"] = image
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")


def compile_pipeline(name: str, defaults: dict[str, Any], opts: ClusterOptions, out_dir: Path) -> Compiled:
    """Compile pipeline ``name`` to ``out_dir/<name>.yaml`` and parse it back."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.yaml"
    compiler.Compiler().compile(build_pipeline(name, defaults, opts), str(path))
    _set_image(path, opts.image)
    spec, platform = parse_compiled(path)
    return Compiled(name, path, spec, platform)


def compile_all(defaults: dict[str, Any], opts: ClusterOptions, out_dir: Path) -> list[Compiled]:
    return [compile_pipeline(name, defaults, opts, out_dir) for name in BUILDERS]
