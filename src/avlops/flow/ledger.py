"""The run ledger: one small JSON record per step of a pipeline run, in the run's shared workspace.

Kubeflow's exit handler cannot read the outputs of the tasks it guards, so each step writes what it did (ran or
failed, how long, its outputs, a gate's verdict) to ``<workspace>/ledger/<run>/<stage>.json``, and the exit handler's
summary reads them back. The workspace is Kubeflow's per-run workspace volume on a cluster and a folder under the
pipeline root locally; the run comes from an output artifact's URI (:func:`avlops.flow.lineage.run_key`), so it is not
a task input and deterministic steps keep caching.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from avlops.fileio import write_json_atomic

__all__ = ["Ledger", "StepRecord", "StepStatus"]


class StepStatus(StrEnum):
    STARTED = "started"  # no end was recorded: the process died
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class StepRecord:
    stage: str
    status: StepStatus
    started_at: str
    seconds: float = 0.0
    error: str = ""
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> artifact URI or value
    gate: dict[str, Any] | None = None  # {"name", "passed", "reasons"} for a gate step
    notes: list[str] = field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> StepRecord:
        return cls(**{**data, "status": StepStatus(data["status"])})


class Ledger:
    """The records of one run: ``<workspace>/ledger/<run>/``."""

    def __init__(self, workspace: str | Path, run: str) -> None:
        if not run:
            raise ValueError("a ledger needs the run's key")
        self.dir = Path(workspace) / "ledger" / run

    def path(self, stage: str) -> Path:
        return self.dir / f"{stage}.json"

    def write(self, record: StepRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path(record.stage), record.to_json_dict())

    def read(self) -> dict[str, StepRecord]:
        records: dict[str, StepRecord] = {}
        for p in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            try:
                records[p.stem] = StepRecord.from_json_dict(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError, KeyError) as err:
                records[p.stem] = StepRecord(p.stem, StepStatus.FAILED, "", error=f"unreadable ledger record: {err}")
        return records

    @contextmanager
    def step(self, stage: str) -> Iterator[StepRecord]:
        """Record ``stage`` as started, then as succeeded or failed (with the error) when the block ends."""
        record = StepRecord(stage, StepStatus.STARTED, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
        self.write(record)
        t0 = time.perf_counter()
        try:
            yield record
        except BaseException as err:
            record.status = StepStatus.FAILED
            last = traceback.extract_tb(err.__traceback__)[-1:] or None
            where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
            record.error = f"{type(err).__name__}: {err}{where}"
            raise
        else:
            record.status = StepStatus.SUCCEEDED
        finally:
            record.seconds = round(time.perf_counter() - t0, 2)
            self.write(record)
