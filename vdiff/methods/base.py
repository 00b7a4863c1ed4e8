"""The Method contract: what every method gives the shared runners (trainer, sample, eval).

An abstract base class rather than a `typing.Protocol`: the runners call every optional hook
unconditionally, so the defaults must be inherited from somewhere, and a method that lacks a
required member fails when it is instantiated (or, for `applications`, defined) instead of
deep inside a jitted train step. Runners never probe a method with `hasattr`/`getattr` and
never branch on `config.method`: what differs between methods is a hook here.

Required
    example_batch(batch_size)        zeros shaped like one host batch (init, shardings)
    init(rng, batch)                 parameters (with logical-partitioning boxes)
    loss(params, batch, rng, *, train, step)  -> (scalar loss, {name: scalar metric})
    sample(params, rng, *, num_samples, ...)  the trainer's periodic samples and the sampling
                                     evaluators' clips: [N, T, H, W, C] in [−1, 1]
    applications                     class attribute {name: "module:function"} of what
                                     `--mode=sample --application=NAME` runs; may be empty

Optional (defaults below)
    create(config)                   the instance for a config (SinFusion picks its role)
    runs(config, workdir)            the (config, workdir) runs of one `--mode=train`
    optimizer(train_config)          None: `train`'s standard optax chain
    initial_params()                 None: random init only
    make_iterator(batch_size, seed)  None: the shared grain pipeline
    host_sample                      False: `sample` is jitted by the trainer
    sample_labels(num)               None: no class conditioning
    evaluators                       names of the `config.evals` entries that apply
    workdir_evaluation               "": `--mode=eval` runs `config.evals` on the run;
                                     else "module:function" (config, workdir) -> results
    application_hint                 a sentence added to the unknown-application error

Applications and the workdir evaluation are named by module path, like the method registry
in `vdiff.methods`, because they live with the runners (`vdiff.sampling`, `vdiff.eval`), which
import the methods: an import here would be a cycle. An application is called as
`fn(config, workdir, opts)` with `opts` a `vdiff.sampling.SampleOptions`, and returns the
folder it wrote.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from vdiff.errors import ConfigError

Application = Callable[[Any, str, Any], str]  # (config, workdir, opts) -> output folder


def resolve(path: str) -> Any:
    """The object named by "package.module:attribute"."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class Method(abc.ABC):
    """Base of every method class; see the module docstring for the contract."""

    applications: ClassVar[Mapping[str, str]]  # required in every subclass
    application_hint: ClassVar[str] = ""
    default_application: ClassVar[str] = "unconditional"  # --mode=sample without --application
    evaluators: ClassVar[tuple[str, ...]] = ()
    workdir_evaluation: ClassVar[str] = ""
    host_sample: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "applications"):
            raise TypeError(f"{cls.__name__} must define `applications` (a name -> "
                            "'module:function' table, possibly empty)")

    # -- required --------------------------------------------------------------------------
    @abc.abstractmethod
    def example_batch(self, batch_size: int) -> dict[str, Any]:
        """Zeros shaped like a host batch of `batch_size` examples."""

    @abc.abstractmethod
    def init(self, rng: Any, batch: dict[str, Any]) -> Any:
        """Parameters for a batch of this shape."""

    @abc.abstractmethod
    def loss(self, params: Any, batch: dict[str, Any], rng: Any, *, train: bool = True,
             step: Any = None) -> tuple[Any, dict[str, Any]]:
        """(scalar loss, scalar metrics); `step` is the train state's step (curricula)."""

    @abc.abstractmethod
    def sample(self, params: Any, rng: Any, *, num_samples: int, **kwargs: Any) -> Any:
        """Periodic training samples [N, T, H, W, C] in [−1, 1]."""

    # -- class-level hooks (usable before a config names a concrete class) ------------------
    @classmethod
    def create(cls, config: Any) -> Method:
        return cls(config)

    @classmethod
    def runs(cls, config: Any, workdir: str) -> list[tuple[Any, str]]:
        """The (config, workdir) runs one `--mode=train` performs, in order."""
        return [(config, workdir)]

    @classmethod
    def application(cls, name: str) -> Application:
        """The entry point of application `name`; an unknown name is a ConfigError."""
        if name not in cls.applications:
            known = sorted(cls.applications) or "none"
            hint = f"; {cls.application_hint}" if cls.application_hint else ""
            raise ConfigError(f"unknown application {name!r} for {cls.__name__} "
                              f"(its applications: {known}){hint}")
        return resolve(cls.applications[name])

    # -- instance hooks ---------------------------------------------------------------------
    def optimizer(self, train_config: Any) -> tuple[Any, Any] | None:
        """(optax transform, lr schedule) for several parameter groups; None: standard."""
        del train_config
        return None

    def initial_params(self) -> dict[str, Any] | None:
        """{group: host arrays} replacing the random init of those groups (pretrained
        weights, a previous stage's run); None: keep the random init."""
        return None

    def make_iterator(self, batch_size: int, seed: int) -> Iterator[dict[str, Any]] | None:
        """The method's own host batches (data that is not a video dataset); None: the
        shared pipeline over `config.data`."""
        del batch_size, seed
        return None

    def sample_labels(self, num: int) -> Any | None:
        """Classes of `num` samples (int32 [num]); None for a model without classes."""
        del num
        return None
