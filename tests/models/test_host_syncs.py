"""Host–device synchronisations in one forward of the models, counted on the CPU.

On a GPU every read of a device value by the host (``.item()``, ``.tolist()``, a data-dependent output size as
``nonzero`` or ``bincount`` have) waits for all queued work: the GPU idles until Python queues more. These tests
record such ops during one training forward on the path the GPU takes (the adapters' sync-free expert
dispatch, forced on the CPU) and allow only the one read that sizes the encoder batches.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from mamol.methods import METHODS
from mamol.missing import COMPLETE, FIRST_MISSING, IMAGE_MISSING, SECOND_MISSING, TEXT_MISSING
from mamol.models import adapter
from tests.helpers import natural_info, remote_info, tiny_model

aten = torch.ops.aten
SYNCING_OPS = {aten._local_scalar_dense, aten.nonzero, aten.bincount, aten.masked_select, aten.unique_consecutive,
               aten._unique, aten._unique2, aten.unique_dim, aten.histc}
"""aten ops that read device values on the host on CUDA: ``.item()`` and ``bool(tensor)`` end in
``_local_scalar_dense``; the others have an output size that depends on the data (CUDA's ``bincount`` reads the
maximum even with ``minlength``)."""
HOST_READS = {Tensor.tolist, Tensor.numpy}
"""Tensor methods that copy to the host; on a CPU tensor no aten op shows them, so they are caught above aten."""


class _Reads(TorchFunctionMode):
    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.seen.append(f"Tensor.{func.__name__}")
        return func(*args, **(kwargs or {}))


class _Ops(TorchDispatchMode):
    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in SYNCING_OPS:
            self.seen.append(str(packet.__name__))
        elif packet is aten.repeat_interleave and func is aten.repeat_interleave.Tensor \
                and kwargs.get("output_size") is None:
            self.seen.append("repeat_interleave without output_size")
        elif packet in (aten.index, aten.index_put, aten.index_put_):
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(isinstance(i, Tensor) and i.dtype == torch.bool for i in indices):
                self.seen.append(f"{packet.__name__} with a boolean mask")
        return func(*args, **kwargs)


@contextlib.contextmanager
def host_syncs() -> Iterator[list[str]]:
    """Record the host reads of the code run inside (names, in order)."""
    seen: list[str] = []
    with _Reads(seen), _Ops(seen):
        yield seen


def remote_batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"hsi": torch.rand(4, 12, 14, 14, generator=g), "lidar": torch.rand(4, 1, 14, 14, generator=g),
            "missing_type": torch.tensor([COMPLETE, FIRST_MISSING, SECOND_MISSING, COMPLETE])}


def natural_batch() -> dict:
    g = torch.Generator().manual_seed(0)
    text_ids = torch.zeros(4, 77, dtype=torch.long)
    text_ids[:, 0], text_ids[:, 5] = 49406, 49407
    text_ids[:, 1:5] = torch.randint(300, 40000, (4, 4), generator=g)
    return {"image": torch.randn(4, 3, 224, 224, generator=g), "text_ids": text_ids,
            "missing_type": torch.tensor([COMPLETE, TEXT_MISSING, IMAGE_MISSING, COMPLETE])}


HOSTS = {"remote": (remote_info(("hsi", "lidar"), (12, 1)), remote_batch),
         "natural": (natural_info("mmimdb", classes=23), natural_batch)}


EXPERTS = {"sparse_experts": True, "load_balance_weight": 0.1}
"""The expert methods' settings with the most host reads before: sparse experts, load balancing on."""


@pytest.mark.parametrize("skip_missing", [True, False])
@pytest.mark.parametrize("kind", sorted(HOSTS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_forward_on_the_gpu_path_reads_the_device_at_most_once(monkeypatch, method, kind, skip_missing):
    """No host read but the counts of present rows, which size the encoder batches when missing rows are skipped
    (one ``tolist`` per forward; none without skipping, or when the method encodes missing rows too)."""
    monkeypatch.setattr(adapter, "SPARSE_DEVICES", frozenset())  # the dispatch every device but the CPU uses
    info, make_batch = HOSTS[kind]
    torch.manual_seed(0)
    updates = EXPERTS if method in ("mamol", "moe_lora") else {}
    net = tiny_model(info, method=method, skip_missing=skip_missing, **updates).train()
    with host_syncs() as seen:
        net(make_batch())
        net.aux_loss()
    skips = skip_missing and not METHODS[method].encodes_missing  # a method filling missing rows encodes all rows
    assert seen == (["Tensor.tolist"] if skips else []), seen


def test_the_recorder_sees_what_syncs():
    """The recorder catches each kind of host read, so the test above can fail."""
    x = torch.tensor([0, 2, 1, 0])
    with host_syncs() as seen:
        x.nonzero()
        x.bincount(minlength=3).tolist()
        x.sum().item()
        x[x > 0]
        bool(x.any())
    assert seen == ["nonzero", "bincount", "Tensor.tolist", "_local_scalar_dense", "index with a boolean mask",
                    "_local_scalar_dense"], seen


@pytest.mark.parametrize("top_k", [1, 2])
def test_the_sync_free_dispatch_equals_the_sparse_one(monkeypatch, top_k):
    """The dense dispatch the GPU takes gives the sparse experts' sum (float32, within 1e-6), gradients too."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 50, 32, generator=g, requires_grad=True)
    a, b = (torch.randn(4, 32, 8, generator=g) * 0.3).requires_grad_(), (torch.randn(4, 8, 32, generator=g) * 0.3)
    b.requires_grad_()
    gate_val, gate_idx = torch.randn(3, 50, 4, generator=g).softmax(-1).topk(top_k, dim=-1)
    base, weight = torch.randn(3, 50, 32, generator=g), torch.randn(3, 50, 32, generator=g)

    def run() -> tuple[torch.Tensor, ...]:
        out = adapter.topk_lora(z, a, b, gate_val, gate_idx, base=base, sparse=True)
        return (out, *torch.autograd.grad((out * weight).sum(), (z, a, b)))

    sparse = run()
    monkeypatch.setattr(adapter, "SPARSE_DEVICES", frozenset())
    for name, got, want in zip(("output", "dz", "dA", "dB"), run(), sparse):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("kind", sorted(HOSTS))
@pytest.mark.parametrize("method", ["mamol", "moe_lora"])
def test_the_models_logits_on_the_gpu_path_equal_the_sparse_ones(monkeypatch, method, kind):
    info, make_batch = HOSTS[kind]
    torch.manual_seed(0)
    net = tiny_model(info, method=method, sparse_experts=True).eval()
    with torch.no_grad():
        for param in net.parameters():
            if param.requires_grad and param.ndim >= 2:
                param.normal_(std=0.1)  # experts far from their init, so a wrong dispatch shows
        sparse = net(make_batch())
        monkeypatch.setattr(adapter, "SPARSE_DEVICES", frozenset())
        gpu_path = net(make_batch())
    torch.testing.assert_close(gpu_path, sparse, rtol=1e-6, atol=1e-6)
