"""The method registry: ``method=<name>`` picks one of :data:`METHODS`.

A method is a :class:`mamol.models.method.Method` subclass in its own file here, with an ``Options``
dataclass whose fields are its config keys, each with its default and meaning
(:func:`mamol.methods.options.key`; keys shared with other methods come from a group of
:mod:`mamol.methods.options`); register it by adding one entry below. The Sacred experiment takes the
keys from here, so nothing else changes for a new method. :func:`build_model` puts the chosen method into
the host for the data kind (one encoder for every remote modality; two towers for image–text).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mamol.errors import ConfigError
from mamol.methods.dcp import DCP
from mamol.methods.flex_moe import FlexMoE
from mamol.methods.linear_probe import LinearProbe
from mamol.methods.lora import LoRA
from mamol.methods.mamol import MaMOL
from mamol.methods.mmp import MMP
from mamol.methods.moe_lora import MoELoRA
from mamol.methods.mora import MoRA
from mamol.methods.specialists import Specialists
from mamol.models.method import Method
from mamol.models.natural import NaturalModel
from mamol.models.remote import RemoteModel
from mamol.settings import BackboneSettings, MethodSettings, ModelSettings
from mamol.tasks import TaskInfo

METHODS: dict[str, type[Method]] = {
    MaMOL.name: MaMOL,
    LinearProbe.name: LinearProbe,
    LoRA.name: LoRA,
    MoELoRA.name: MoELoRA,
    MMP.name: MMP,
    DCP.name: DCP,
    MoRA.name: MoRA,
    FlexMoE.name: FlexMoE,
    Specialists.name: Specialists,
}
"""Method name (the ``method`` config key) -> class."""


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``; ConfigError listing the choices otherwise."""
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is not a method of this framework; choose one of {sorted(METHODS)}")
    return METHODS[name]


def display_name(label: str, method: str) -> str:
    """A report column's name in tables and figures: the method's ``title``, with a sweep variant's name and the
    keys that keep runs apart in brackets (``mamol_r4`` of ``mamol`` -> "MaMOL (mamol_r4)", ``mamol
    (max_epoch=3)`` -> "MaMOL (max_epoch=3)"); a method this framework does not know keeps its label."""
    if method not in METHODS:
        return label
    base, _, extra = label.partition(" (")
    parts = [base] * (base != method) + [extra.removesuffix(")")] * bool(extra)
    return METHODS[method].title + (f" ({', '.join(parts)})" if parts else "")


def build_model(backbone: BackboneSettings, model: ModelSettings, method: MethodSettings,
                infos: Sequence[TaskInfo]) -> nn.Module:
    """The model of a run: its method inside the host for the data kind of ``infos``."""
    infos = list(infos)
    if method.budget != "default" and method.capacity is None:
        raise ConfigError(f"budget={method.budget!r} is settled on the data's shapes before the model is built: call "
                          f"mamol.methods.budget.settle (or model_for) first")
    kinds = {info.kind for info in infos}
    if len(kinds) != 1:
        raise ConfigError(f"datasets={[i.name for i in infos]} mixes remote and image-text tasks; train them "
                          f"separately")
    chosen = method_class(method.name)(method.options, infos[0].kind, infos[0].modalities)
    if infos[0].kind == "remote":
        if len(infos) != 1:
            raise ConfigError(f"datasets={[i.name for i in infos]}: a remote run trains on one scene at a time")
        return RemoteModel(backbone, model, infos[0], chosen)
    return NaturalModel(backbone, model, infos, chosen)
