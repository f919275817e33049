"""What a served python model is, without Triton: a :class:`Handler` takes the requests of one dynamic batch as
numpy arrays named by the contract and answers each one with its outputs or an :class:`InputError`.

The Triton glue (:mod:`avlops.serving.backend`) only converts tensors and errors; every check and transform lives in
a handler, built once when the model loads and unit-tested directly. One bad request never fails its neighbours in
a batch: requests are checked one by one first, and if the batched run still finds a bad one, each request is run
on its own so the error reaches only the request that caused it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from avlops.serving.contract import ModelSpec, TensorSpec, decode_texts

__all__ = ["Arrays", "Handler", "InputError", "Outcome", "batch_sizes", "stack", "text_items"]

#: Tensors of one request (or of a batch), by contract name; every array has the batch axis first.
Arrays = dict[str, np.ndarray]
Outcome = Arrays | Exception


class InputError(ValueError):
    """A request the model cannot serve (wrong type or shape, bad value, too large, undecodable media): answered with
    INVALID_ARGUMENT while the model keeps serving everyone else."""


def batch_sizes(requests: Sequence[Arrays]) -> list[int]:
    return [int(next(iter(r.values())).shape[0]) if r else 0 for r in requests]


def stack(requests: Sequence[Arrays], name: str) -> np.ndarray:
    """The requests' ``name`` tensors concatenated along the batch axis."""
    parts = [r[name] for r in requests]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def text_items(array: np.ndarray, what: str) -> list[str]:
    """A text tensor [B, n] (UTF-8, zero-padded) -> B strings; undecodable UTF-8 is an :class:`InputError`."""
    try:
        return decode_texts(array)
    except UnicodeDecodeError:
        raise InputError(f"{what} is not valid UTF-8") from None


def _check_tensor(spec: TensorSpec, array: np.ndarray, model: str) -> None:
    if array.dtype != spec.dtype.numpy:
        raise InputError(f"{model}: input {spec.name!r} must be {spec.dtype.value}, got {array.dtype}")
    item = tuple(array.shape[1:])
    if array.ndim < 1 or not (spec.accepts(item) or item == spec.item_shape()):
        raise InputError(
            f"{model}: input {spec.name!r} must have shape [batch, {', '.join(map(str, spec.dims))}], "
            f"got {list(array.shape)}"
        )


class Handler(ABC):
    """A served python model: ``check`` one request, ``run`` a batch of checked requests (outputs per request)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def check(self, request: Arrays) -> None:  # noqa: B027 - optional hook: the contract checks always run
        """Refuse a request with :class:`InputError` before it joins a batch (beyond the contract's dtype/shape)."""

    @abstractmethod
    def run(self, requests: Sequence[Arrays]) -> list[Arrays]:
        """Outputs for each request, in order; raise :class:`InputError` for input the checks could not foresee."""

    def handle(self, requests: Sequence[Arrays]) -> list[Outcome]:
        """Answer every request: its outputs, or the :class:`InputError` that refused it."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        good: list[int] = []
        for i, request in enumerate(requests):
            try:
                self._check_contract(request)
                self.check(request)
                good.append(i)
            except InputError as err:
                outcomes[i] = err
        if good:
            batch = [requests[i] for i in good]
            try:
                answers: list[Outcome] = list(self.run(batch))
            except InputError as err:  # a batch of one is its own culprit; else run each request on its own
                answers = [err] if len(batch) == 1 else [self._run_one(r) for r in batch]
            for i, answer in zip(good, answers, strict=True):
                outcomes[i] = answer
        return [o if o is not None else InputError("not answered") for o in outcomes]

    def _run_one(self, request: Arrays) -> Outcome:
        try:
            return self.run([request])[0]
        except InputError as err:
            return err

    def _check_contract(self, request: Arrays) -> None:
        missing = [s.name for s in self.spec.inputs if s.name not in request and not s.optional]
        if missing:
            raise InputError(f"{self.spec.name}: missing input(s) {missing}")
        present = [s for s in self.spec.inputs if s.name in request]
        sizes = {int(request[s.name].shape[0]) for s in present if request[s.name].ndim}
        if len(sizes) > 1:
            raise InputError(f"{self.spec.name}: inputs disagree on the batch size {sorted(sizes)}")
        if sizes and (n := sizes.pop()) > self.spec.max_batch_size:
            raise InputError(f"{self.spec.name}: batch of {n} exceeds max_batch_size {self.spec.max_batch_size}")
        for spec in present:
            _check_tensor(spec, request[spec.name], self.spec.name)
