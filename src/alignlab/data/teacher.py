"""A synthetic linear-teacher dataset, for theory on low-dimensional feedback.

Inputs are ``x ~ N(0, I_d_in)``; a fixed random teacher ``W`` (``d_in x d_out``,
entries ``N(0, 1/d_in)``, so each output has unit variance) gives

* regression: ``y = x W + noise * eps`` with ``eps ~ N(0, I_d_out)``;
* classification: ``y = argmax(x W + noise * eps)``, with ``d_out`` classes
  (``noise`` = 0, the default, gives exactly ``argmax(x W)``).

Everything is drawn from generators keyed by ``seed`` and the part drawn
(weights, train inputs, test inputs, train noise, test noise), so the teacher
does not depend on ``n_train``/``n_test`` and the test set does not depend on
``n_train``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from .dataset import TASKS, Dataset
from .seeding import generator

NAME = "teacher"


@dataclass(frozen=True)
class TeacherOptions:
    """The options of :func:`load_teacher`, with their defaults."""

    d_in: int = 100
    d_out: int = 10
    n_train: int = 10000
    n_test: int = 2000
    noise: float = 0.0
    task: str = "regression"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("d_in", "d_out", "n_train", "n_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"teacher option {name} must be an integer >= 1, got {value!r}")
        if (
            isinstance(self.noise, bool)
            or not isinstance(self.noise, (int, float))
            or not (self.noise >= 0 and math.isfinite(self.noise))
        ):
            raise ValueError(
                f"teacher option noise must be a finite number >= 0, got {self.noise!r}"
            )
        if self.task not in TASKS:
            raise ValueError(
                f"teacher option task must be one of {', '.join(TASKS)}, got {self.task!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"teacher option seed must be an integer, got {self.seed!r}")


def option_names() -> list[str]:
    """The valid option names of the teacher dataset."""
    return [f.name for f in fields(TeacherOptions)]


def teacher_weight(d_in: int, d_out: int, seed: int = 0) -> torch.Tensor:
    """The fixed teacher ``W`` (float32, ``d_in x d_out``, entries ``N(0, 1/d_in)``)."""
    gen = generator(NAME, seed, "weight", d_in, d_out)
    return torch.randn(d_in, d_out, generator=gen) / math.sqrt(d_in)


def load_teacher(**options: object) -> Dataset:
    """Build the teacher dataset; unknown options raise ``ValueError`` listing valid ones."""
    unknown = sorted(set(options) - set(option_names()))
    if unknown:
        raise ValueError(
            f"dataset {NAME!r}: unknown option(s) {', '.join(unknown)}; "
            f"valid options are {', '.join(option_names())}"
        )
    opts = TeacherOptions(**options)  # type: ignore[arg-type]
    weight = teacher_weight(opts.d_in, opts.d_out, opts.seed)
    train_x, train_y = _split(opts, weight, "train", opts.n_train)
    test_x, test_y = _split(opts, weight, "test", opts.n_test)
    return Dataset(
        name=NAME,
        task=opts.task,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=opts.d_out,
        mean=(),
        std=(),
    )


def _split(
    opts: TeacherOptions, weight: torch.Tensor, part: str, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, opts.d_in, generator=generator(NAME, opts.seed, part, "x"))
    out = x @ weight
    if opts.noise > 0:
        eps = torch.randn(n, opts.d_out, generator=generator(NAME, opts.seed, part, "noise"))
        out = out + opts.noise * eps
    if opts.task == "classification":
        return x, out.argmax(dim=1)
    return x, out
