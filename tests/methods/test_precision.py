"""Mixed precision: every registered method trains and evaluates under autocast on both hosts.

``precision="bf16"`` runs Lightning's bf16-mixed, on the CPU too: the forward and the loss run under
``torch.autocast`` while the parameters, their gradients and the optimiser stay float32. These tests take that
step by hand on the tiny random backbone, with batches that miss modalities. The fp16 (with a GradScaler, as
Lightning's 16-mixed) and bf16 checks on CUDA are marked ``cuda`` and skipped without a GPU: ``pytest -m cuda``.
"""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from mamol.methods import METHODS
from mamol.module import MaMOLModule
from mamol.optim import build_optimizer
from mamol.settings import OptimSettings, from_config
from mamol.tasks import TaskInfo
from tests.helpers import natural_info, remote_info, tiny_batch, tiny_config, tiny_model

HOSTS = {"remote": remote_info(("hsi", "lidar"), (12, 1), classes=5), "natural": natural_info("mmimdb", classes=23)}
"""The two hosts: a remote scene (HSI 12 bands + LiDAR, 5 classes) and MM-IMDb (multi-label, BCE loss)."""

BF16_TOLERANCE = 8 * 2.0 ** -8
"""Largest bf16-autocast logit deviation allowed, as a fraction of the 32-bit logits' largest magnitude (3.1 %).

bf16 keeps 8 significant bits, so each rounded matmul input is off by up to 2^-9 of its value; the logits pass
through the tokenizer, four blocks of rounded attention/MLP/adapter matmuls and the head, and those errors add
up to 0.5-1.4 % of the logit scale here. Eight bf16 steps (2^-8 each) leave room for that and still catch what
a real autocast bug does (a modality's features lost, a weight cast wrongly), which moves logits by their scale.
"""

MAX_SKIPPED_STEPS = 8
"""fp16 steps a GradScaler may skip for overflow (halving its scale of 2^16 each time) before one must succeed."""


class CudaAutocastLike(TorchDispatchMode):
    """CUDA autocast's casts, on the CPU: matmuls and convolutions run in ``dtype``, layer norm and softmax in
    float32 (CPU autocast casts a different op list, so a mix it leaves out shows only on the GPU).

    Ops that write one tensor into another (index_copy, index_put, index_add, scatter) are recorded where the
    two dtypes differ (``mixed``); on CUDA they raise. Forward only (use under ``torch.no_grad()``).
    """

    LOW = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
           torch.ops.aten.baddbmm.default, torch.ops.aten.convolution.default}
    FLOAT32 = {torch.ops.aten.native_layer_norm.default, torch.ops.aten._softmax.default,
               torch.ops.aten._log_softmax.default}
    WRITES = {"index_copy", "index_copy_", "index_put", "index_put_", "index_add", "index_add_", "scatter",
              "scatter_", "scatter_add", "scatter_add_"}

    def __init__(self, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.dtype = dtype
        self.mixed: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = self.dtype if func in self.LOW else torch.float32 if func in self.FLOAT32 else None
        if target is not None:
            def cast(x):
                return x.to(target) if isinstance(x, Tensor) and x.is_floating_point() else x
            args, kwargs = tree_map(cast, args), tree_map(cast, kwargs)
        name = func.overloadpacket.__name__
        floats = [x for x in (*args, *kwargs.values()) if isinstance(x, Tensor) and x.is_floating_point()]
        if name in self.WRITES and len({x.dtype for x in floats}) > 1:
            self.mixed.append(f"{name}: {[x.dtype for x in floats]}")
            into = floats[0].dtype  # go on as if the source had been cast, to find every such op in one pass
            args = tuple(x.to(into) if isinstance(x, Tensor) and x.is_floating_point() else x for x in args)
        return func(*args, **kwargs)


def model(method: str, kind: str) -> nn.Module:
    """The tiny model of ``method`` on host ``kind`` with its trainable weights drawn as if trained a while.

    At their initial values (LoRA's B zero, experts at std 0.02) the methods' own paths move the logits by under
    2 %, below the tolerance; at std 0.1 by 5 to 90 % (most methods), so a path that autocast broke shows.
    """
    torch.manual_seed(0)
    net = tiny_model(HOSTS[kind], method=method)
    with torch.no_grad():
        for param in net.parameters():
            if param.requires_grad and param.ndim >= 2:
                param.normal_(std=0.1)
    return net


def trainable(net: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable tensors of ``net`` that hold anything (an ablation may leave an expert stack empty)."""
    return {name: p for name, p in net.named_parameters() if p.requires_grad and p.numel()}


def training_step(net: nn.Module, data: dict, info: TaskInfo, device: str, dtype: torch.dtype,
                  scaler: torch.amp.GradScaler | None = None) -> tuple[Tensor, dict[str, Tensor | None]]:
    """One optimiser step as Lightning's ``<dtype>-mixed`` takes it: forward and loss under autocast, backward
    and the AdamW step outside (through ``scaler`` for fp16). Returns the loss and the (unscaled) gradients."""
    optimizer, _ = build_optimizer(net, from_config(OptimSettings, tiny_config()), total_steps=1)
    net.train()
    for _ in range(MAX_SKIPPED_STEPS + 1):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype):
            logits = net(data)
            loss = MaMOLModule.loss(logits, data["label"], info)
            aux = net.aux_loss()
            if aux is not None:
                loss = loss + aux
        assert logits.dtype == dtype, f"the logits are {logits.dtype}: the forward did not run under autocast"
        if scaler is None:
            loss.backward()
            grads = {name: p.grad for name, p in trainable(net).items()}
            optimizer.step()
            return loss.detach(), grads
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads = {name: p.grad for name, p in trainable(net).items()}
        scale = scaler.get_scale()
        scaler.step(optimizer)  # skipped when a gradient overflowed; update() then halves the scale
        scaler.update()
        if scaler.get_scale() >= scale:
            return loss.detach(), grads
    raise AssertionError(f"the GradScaler skipped {MAX_SKIPPED_STEPS + 1} fp16 steps in a row (scale now "
                         f"{scaler.get_scale()}): the gradients overflow at any reasonable scale")


def check_step(net: nn.Module, loss: Tensor, grads: dict[str, Tensor | None], before: dict[str, Tensor]) -> None:
    """Finite loss, a finite float32 gradient for every trainable tensor, float32 parameters that moved."""
    assert torch.isfinite(loss), f"loss {loss.item()}"
    missing = [name for name, grad in grads.items() if grad is None]
    assert not missing, f"no gradient under autocast: {missing}"
    bad = [name for name, grad in grads.items() if grad.dtype != torch.float32 or not torch.isfinite(grad).all()]
    assert not bad, f"gradients not finite float32: {bad}"
    not_fp32 = [name for name, p in net.named_parameters() if p.dtype != torch.float32]
    assert not not_fp32, f"parameters no longer float32 after the step: {not_fp32}"
    params = trainable(net)
    still = [name for name, grad in grads.items() if grad.any() and torch.equal(params[name].cpu(), before[name])]
    assert not still, f"the optimiser step left these tensors unchanged despite a gradient: {still}"


@pytest.mark.parametrize("kind", sorted(HOSTS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_bf16_autocast_training_step_on_cpu(method, kind):
    net = model(method, kind)
    before = {name: p.detach().clone() for name, p in trainable(net).items()}
    loss, grads = training_step(net, tiny_batch(kind), HOSTS[kind], "cpu", torch.bfloat16)
    check_step(net, loss, grads, before)


@pytest.mark.parametrize("kind", sorted(HOSTS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_op_writes_one_dtype_into_another_under_cuda_style_autocast(method, kind):
    """CUDA autocast gives half matmul outputs where CPU autocast does not; a tensor written into a buffer of
    another dtype (index_copy of a half attention output into a float buffer) crashes the first fp16 GPU run."""
    net = model(method, kind).train()
    mode = CudaAutocastLike(torch.bfloat16)
    with torch.no_grad(), mode:
        net(tiny_batch(kind))
    assert not mode.mixed, mode.mixed


@pytest.mark.parametrize("kind", sorted(HOSTS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_bf16_autocast_evaluation_matches_32_bit(method, kind):
    net = model(method, kind).eval()
    data = tiny_batch(kind)
    with torch.no_grad():
        full = net(data)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(data)
    assert full.dtype == torch.float32 and mixed.dtype == torch.bfloat16, (full.dtype, mixed.dtype)
    scale = full.abs().max().item()
    deviation = (mixed.float() - full).abs().max().item()
    assert deviation <= BF16_TOLERANCE * scale, (
        f"bf16 logits deviate by {deviation:.3g} = {deviation / scale:.2%} of the 32-bit logit scale {scale:.3g}; "
        f"allowed: {BF16_TOLERANCE:.2%} (8 bf16 steps of 2^-8)")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (select with -m cuda on a GPU machine)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("kind", sorted(HOSTS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_autocast_training_step_on_cuda(method, kind, dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    net = model(method, kind).to("cuda")
    before = {name: p.detach().cpu().clone() for name, p in trainable(net).items()}
    # Lightning's 16-mixed scales the loss with a GradScaler (fp16 gradients underflow otherwise); bf16-mixed has
    # float32's range and no scaler.
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    loss, grads = training_step(net, tiny_batch(kind, "cuda"), HOSTS[kind], "cuda", dtype, scaler)
    check_step(net, loss, grads, before)
