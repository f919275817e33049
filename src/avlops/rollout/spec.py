"""The typed rollout definition, one YAML for both scales, with Argo Rollouts' field names.

A rollout file holds the canary ``strategy`` (steps of ``setWeight``, ``pause`` and ``analysis``) and the
``analysisTemplates`` its analysis steps name. A template's metrics each have a Prometheus ``query`` with
``{{args.NAME}}`` placeholders, an ``interval``, a ``count``, ``successCondition`` / ``failureCondition`` and the
``failureLimit`` / ``inconclusiveLimit`` budgets, exactly as in Argo's ``AnalysisTemplate``, so the Kubernetes
rendering (:mod:`avlops.rollout.kubernetes`) maps each field one to one::

    strategy:
      canary:
        steps:
          - setWeight: 20
          - analysis: {templates: [{templateName: canary-health}]}
          - pause: {duration: 30s}
          - pause: {}                      # waits for `avlops rollout promote`
    analysisTemplates:
      - name: canary-health
        args: [{name: canary-cluster}, {name: window, value: 1m}]
        metrics:
          - name: error-ratio
            interval: 10s
            count: 3
            failureLimit: 0
            inconclusiveLimit: 1
            successCondition: result[0] <= 0.05
            failureCondition: result[0] > 0.05
            provider:
              prometheus:
                query: sum(rate(...{envoy_cluster_name="{{args.canary-cluster}}"}[{{args.window}}]))

Unknown keys, a step with two actions, an analysis naming a missing template, a placeholder without an argument, or
a condition outside the safe grammar of :mod:`avlops.rollout.conditions` are refused with the field named.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from avlops.config import StrictModel, build, load_yaml
from avlops.rollout.conditions import ConditionError, check_condition

__all__ = [
    "AnalysisStep",
    "AnalysisTemplate",
    "Argument",
    "CanaryStep",
    "CanaryStrategy",
    "Metric",
    "Pause",
    "Phase",
    "RolloutSpec",
    "SpecError",
    "load_rollout",
    "parse_duration",
]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # a Kubernetes DNS label: usable at both scales
PLACEHOLDER = re.compile(r"\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}")


class SpecError(ValueError):
    """A rollout or analysis definition that cannot be used; the message names the field."""


class Phase(StrEnum):
    """The result of a measurement, a metric or an analysis run (Argo's ``AnalysisPhase``)."""

    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"
    RUNNING = "Running"


def parse_duration(text: str | int | float) -> float:
    """``"30s"``, ``"1m"``, ``"500ms"``, ``"2h"`` (or a number of seconds) -> seconds."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"{text}: a duration cannot be negative")
        return float(text)
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"{text!r}: a duration is a number with ms, s, m or h (e.g. 30s, 1m)")
    return float(m.group(1)) * _UNITS[m.group(2)]


class _Spec(StrictModel):
    """Camel-case keys as in Argo (``setWeight``, ``failureLimit``); frozen; unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class Argument(_Spec):
    name: str
    value: str | None = None  # a template argument without a value must be given one by the analysis step

    @field_validator("value", mode="before")
    @classmethod
    def _as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) else v


class PrometheusProvider(_Spec):
    query: str
    address: str | None = None  # default: the Prometheus the platform started (or the cluster's, when rendered)


class CompareProvider(_Spec):
    """A canary-vs-stable statistical comparison (:mod:`avlops.rollout.compare`): ``query`` is evaluated over the
    last ``window`` once with ``{{args.track}}`` = the canary's value and once with the stable's, sampled every
    ``step``; the result is the one-sided Mann–Whitney p-value that the canary's samples are not larger
    (``direction: increase``, e.g. latency, errors) or not smaller (``decrease``, e.g. recall)."""

    query: str
    canary: str
    stable: str
    window: str = "5m"
    step: str = "15s"
    direction: str = Field(default="increase", pattern="^(increase|decrease)$")
    address: str | None = None

    @field_validator("window", "step")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class Provider(_Spec):
    prometheus: PrometheusProvider | None = None
    compare: CompareProvider | None = None

    @model_validator(mode="after")
    def _one(self) -> Provider:
        chosen = [n for n in ("prometheus", "compare") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(f"exactly one provider (prometheus or compare), got {chosen or 'none'}")
        return self

    def queries(self) -> list[str]:
        return [p.query for p in (self.prometheus, self.compare) if p is not None]


class Metric(_Spec):
    name: str
    provider: Provider
    interval: str | None = None
    initial_delay: str | None = None
    count: int | None = Field(default=None, ge=1)
    success_condition: str | None = None
    failure_condition: str | None = None
    failure_limit: int = Field(default=0, ge=0)
    inconclusive_limit: int = Field(default=0, ge=0)

    @field_validator("interval", "initial_delay")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("success_condition", "failure_condition")
    @classmethod
    def _condition(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                check_condition(v)
            except ConditionError as err:
                raise ValueError(str(err)) from err
        return v

    @model_validator(mode="after")
    def _shape(self) -> Metric:
        if self.success_condition is None and self.failure_condition is None:
            raise ValueError(f"metric {self.name!r}: give a successCondition, a failureCondition or both")
        if self.count is not None and self.count > 1 and self.interval is None:
            raise ValueError(f"metric {self.name!r}: count {self.count} needs an interval between measurements")
        return self

    @property
    def measurements(self) -> int:
        """How many measurements the metric takes (Argo: ``count``, 1 without an interval)."""
        return self.count or 1

    @property
    def interval_s(self) -> float:
        return parse_duration(self.interval) if self.interval else 0.0

    @property
    def initial_delay_s(self) -> float:
        return parse_duration(self.initial_delay) if self.initial_delay else 0.0


class AnalysisTemplate(_Spec):
    name: str
    args: tuple[Argument, ...] = ()
    metrics: tuple[Metric, ...] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r}: use lowercase letters, digits and '-' (a Kubernetes name)")
        return v

    @model_validator(mode="after")
    def _placeholders(self) -> AnalysisTemplate:
        declared = {a.name for a in self.args}
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"template {self.name!r}: metric names repeat: {names}")
        for metric in self.metrics:
            allowed = declared | ({"track"} if metric.provider.compare is not None else set())
            for query in metric.provider.queries():
                missing = set(PLACEHOLDER.findall(query)) - allowed
                if missing:
                    raise ValueError(
                        f"template {self.name!r}, metric {metric.name!r}: the query uses args {sorted(missing)} "
                        f"that the template does not declare (args: {sorted(declared) or 'none'})"
                    )
        return self


class TemplateRef(_Spec):
    template_name: str


class AnalysisStep(_Spec):
    templates: tuple[TemplateRef, ...] = Field(min_length=1)
    args: tuple[Argument, ...] = ()


class Pause(_Spec):
    duration: str | None = None  # absent: wait for a person (`avlops rollout promote`)

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @property
    def seconds(self) -> float | None:
        return parse_duration(self.duration) if self.duration is not None else None


class CanaryStep(_Spec):
    set_weight: int | None = Field(default=None, ge=0, le=100)
    pause: Pause | None = None
    analysis: AnalysisStep | None = None

    @model_validator(mode="after")
    def _one_action(self) -> CanaryStep:
        actions = [k for k in ("setWeight", "pause", "analysis") if getattr(self, _snake(k)) is not None]
        if len(actions) != 1:
            raise ValueError(f"a step has exactly one of setWeight, pause, analysis; got {actions or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return "setWeight" if self.set_weight is not None else "pause" if self.pause is not None else "analysis"


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


class CanaryStrategy(_Spec):
    steps: tuple[CanaryStep, ...] = Field(min_length=1)


class Strategy(_Spec):
    canary: CanaryStrategy


class RolloutSpec(_Spec):
    """A whole rollout definition; see the module docstring."""

    name: str = "avlops"
    strategy: Strategy
    analysis_templates: tuple[AnalysisTemplate, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> RolloutSpec:
        templates = {t.name: t for t in self.analysis_templates}
        if len(templates) != len(self.analysis_templates):
            raise ValueError("analysisTemplates: two templates have the same name")
        for i, step in enumerate(self.strategy.canary.steps):
            if step.analysis is None:
                continue
            given = {a.name for a in step.analysis.args if a.value is not None}
            for ref in step.analysis.templates:
                template = templates.get(ref.template_name)
                if template is None:
                    raise ValueError(
                        f"strategy.canary.steps.{i}.analysis: no analysis template {ref.template_name!r} "
                        f"(templates: {sorted(templates) or 'none'})"
                    )
                unset = {a.name for a in template.args if a.value is None} - given - set(RUNTIME_ARGS)
                if unset:
                    raise ValueError(
                        f"strategy.canary.steps.{i}.analysis: template {template.name!r} needs values for "
                        f"args {sorted(unset)}"
                    )
        return self

    @property
    def steps(self) -> tuple[CanaryStep, ...]:
        return self.strategy.canary.steps

    def template(self, name: str) -> AnalysisTemplate:
        for t in self.analysis_templates:
            if t.name == name:
                return t
        raise SpecError(f"no analysis template {name!r}")

    def resolved_args(self, step: AnalysisStep, template: AnalysisTemplate, runtime: dict[str, str]) -> dict[str, str]:
        """The template's arguments for one analysis step: template defaults < the platform's runtime values
        (:data:`RUNTIME_ARGS`) < the step's own values."""
        values = {a.name: a.value for a in template.args if a.value is not None}
        values.update({k: v for k, v in runtime.items() if k in {a.name for a in template.args}})
        values.update({a.name: a.value for a in step.args if a.value is not None})
        missing = {a.name for a in template.args} - set(values)
        if missing:
            raise SpecError(f"template {template.name!r}: no value for args {sorted(missing)}")
        return values


#: Arguments the controller fills in at run time (the clusters / tracks / versions of this rollout); a template may
#: declare them without a value.
RUNTIME_ARGS = ("canary-cluster", "stable-cluster", "canary-version", "stable-version")


def render_query(query: str, args: dict[str, str]) -> str:
    """Replace every ``{{args.NAME}}`` in ``query``."""

    def one(m: re.Match[str]) -> str:
        if m.group(1) not in args:
            raise SpecError(f"query needs arg {m.group(1)!r}: {query}")
        return args[m.group(1)]

    return PLACEHOLDER.sub(one, query)


def load_rollout(path: str | Path) -> RolloutSpec:
    """Read and check a rollout file; a bad one raises :class:`avlops.config.ConfigError` naming every bad field."""
    return build(RolloutSpec, load_yaml(path), str(path))
