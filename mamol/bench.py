"""Model benchmarks, measured side by side in one process: ``python -m mamol.bench [--vit ViT-B/16|tiny|both]``.

Batch 16, two modalities (HSI 144 bands + LiDAR 1, 14×14 patches, 15 classes: the Houston 2013 shapes),
missing codes drawn for the batch at the training setting 0.7 / both (5 complete, 6 HSI-missing, 5
LiDAR-missing), random backbone weights. Variants run interleaved with a rotating order and medians are
reported:

a. a MaMOL training step vs the same step with the adapters removed (tokenizers and head still train);
b. skipping missing modalities' encoder passes vs encoding everything and zeroing;
c. sparse top-k dynamic experts vs the dense masked formula — whole training step, and the dynamic experts
   alone (forward + backward) next to a per-expert dense layout like the release's;
d. trainable parameters (by part) and the peak memory of one training step (CUDA: max allocated; CPU: peak
   resident set growth during the step).

``--methods [a,b,...]`` (all registered methods when no list is given) prints instead one row per method on the
same batch (:func:`method_table`): trainable parameters, the training step's time as a ratio to ``linear_probe``
(interleaved in the same run), its peak memory, and the longest token sequence the encoder's blocks run on
(prompt methods lengthen every sequence of every later block).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import re
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamol.errors import ConfigError
from mamol.experiment import defaults
from mamol.methods import METHODS, budget, method_class
from mamol.methods.budget import model_for
from mamol.missing import MissingSetting, make_missing_table
from mamol.models import adapter as experts
from mamol.models.adapter import AdapterContext, MaMOLAdapter
from mamol.models.lora import OpenAttention
from mamol.models.remote import RemoteModel
from mamol.settings import resolve_model
from mamol.tasks import REMOTE, TaskInfo

MODALITIES = ("hsi", "lidar")
BANDS = (144, 1)
CLASSES = 15
PATCH = 14
TODAY = "today's step"  # the bench variant with the layout before issue 11's levers (open_clip attention)


def houston_info() -> TaskInfo:
    return TaskInfo(name="houston2013-shapes", kind="remote", task_type=REMOTE, modalities=MODALITIES,
                    bands=dict(zip(MODALITIES, BANDS)), num_classes=CLASSES,
                    class_names=tuple(f"c{i}" for i in range(CLASSES)), patch_size=PATCH, metadata={})


def remote_model(vit: str, **changes) -> RemoteModel:
    """The model ``python run.py with remote vit=... clip_random_init=True <changes>`` builds, on Houston shapes."""
    cfg = defaults("remote", vit=vit, clip_random_init=True, **changes)
    return model_for(cfg, [houston_info()])


def make_batch(batch_size: int, device: torch.device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {m: torch.rand(batch_size, c, PATCH, PATCH, generator=g) for m, c in zip(MODALITIES, BANDS)}
    setting = MissingSetting(ratio=0.7, type="both", both_ratio=0.5, ratio_2=0.0, seed=seed)  # training setting
    batch["missing_type"] = make_missing_table(batch_size, MODALITIES, setting)
    for m, code in zip(MODALITIES, (1, 2)):  # the fill of a missing modality (ones), as the data pipeline does
        batch[m][batch["missing_type"] == code] = 1.0
    batch["label"] = torch.randint(0, CLASSES, (batch_size,), generator=g)
    return {k: v.to(device) for k, v in batch.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_fn(model: RemoteModel, batch: dict, autocast: torch.dtype | None = None) -> Callable[[], Tensor]:
    """One training step (forward, loss, backward, AdamW) returning the loss; ``autocast``: a reduced precision
    for forward + loss, fp16 with a gradient scaler as Lightning's ``16-mixed`` takes it."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    device_type = next(model.parameters()).device.type
    scaler = torch.amp.GradScaler(device_type, enabled=autocast == torch.float16)

    def step() -> Tensor:
        with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = F.cross_entropy(model(batch), batch["label"])
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.detach()

    return step


def interleaved(fns: dict[str, Callable[[], object]], reps: int,
                device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall-clock and process-CPU seconds per call of each function after one warm-up call each.

    Calls are interleaved, the order rotating each round (A B C, B C A, C A B, ...), so slow drifts of the machine
    and after-effects of one variant on the next fall on all alike. CPU time is less sensitive to other
    processes sharing the cores.
    """
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for fn in fns.values():
        fn()
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate to cancel order effects
            fn = fns[name]
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    med = statistics.median
    return {n: med(t) for n, t in wall.items()}, {n: med(t) for n, t in cpu.items()}


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1))


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[float, str]:
    """Peak memory (MiB) one call of ``fn`` adds on top of what is allocated before it, and how it was measured."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "CUDA max_memory_allocated"
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so the baseline is what is live
        before = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        fn()
        return (_status_kb("VmHWM") - before) / 1024, "peak RSS growth during the step"
    except (OSError, AttributeError):
        return float("nan"), "unavailable on this system"


def release_style_dynamic(adapter: MaMOLAdapter, z: torch.Tensor, gate_val: torch.Tensor,
                          gate_idx: torch.Tensor) -> torch.Tensor:
    """Per-expert dense layout: every expert's full (N, L, D) output on every token, then masked and summed."""
    gates = torch.zeros(*z.shape[:-1], adapter.num_dynamic, dtype=z.dtype, device=z.device)
    gates = gates.scatter(-1, gate_idx, gate_val)  # (N, L, E)
    outs = torch.stack([(z @ adapter.dyn_A[e]) @ adapter.dyn_B[e] for e in range(adapter.num_dynamic)], dim=-1)
    return (outs * gates.unsqueeze(-2)).sum(-1)  # (N, L, D)


def dynamic_expert_bench(adapter: MaMOLAdapter, rows: int, tokens: int, reps: int,
                         device: torch.device) -> dict[str, float]:
    """Forward + backward of the dynamic experts alone on (rows, tokens, D) activations, seconds (median)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(rows, tokens, adapter.dim, generator=g).to(device).requires_grad_(True)
    pattern = torch.randn(rows, adapter.router_in.in_features - adapter.dim, generator=g).to(device)
    with torch.no_grad():
        gate_val, gate_idx = adapter.route(z, pattern).topk(adapter.top_k, dim=-1)
    grad = torch.randn(z.shape, generator=g).to(device)

    def run(fn: Callable) -> Callable[[], None]:
        def call() -> None:
            fn(adapter, z, gate_val, gate_idx).backward(grad)
        return call

    return interleaved({"sparse": run(MaMOLAdapter.dynamic_sparse), "dense": run(MaMOLAdapter.dynamic_dense),
                        "per-expert": run(release_style_dynamic)}, reps, device)[0]


# ------------------------------------------------------------------------------------------- speed levers
# Each lever is a context manager that changes a model in place for the steps run inside it and restores it
# afterwards, so every variant times the same model, parameters and optimiser state.

_UNSET = object()


@contextlib.contextmanager
def patched(changes: list[tuple[object, str, object]]) -> Iterator[None]:
    """Set ``obj.name = value`` for each change inside the block; restore the old attributes afterwards.

    An attribute that was not set on the object itself (e.g. a method found on the class) is deleted again.
    """
    def own(obj: object, name: str) -> object:
        held = name in vars(obj) or (isinstance(obj, nn.Module) and name in obj._modules)
        return getattr(obj, name) if held else _UNSET

    saved = [(obj, name, own(obj, name)) for obj, name, _ in changes]
    for obj, name, value in changes:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, old in reversed(saved):
            if old is _UNSET:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


def adapters_of(model: nn.Module) -> list[MaMOLAdapter]:
    return [m for m in model.modules() if isinstance(m, MaMOLAdapter)]


def release_adapter_forward(adapter: MaMOLAdapter, z: Tensor, context: AdapterContext) -> Tensor:
    """Δ in the release's layout: the router on the built [z ; e], every expert (dynamic, shared, modality) a
    separate dense LoRA on every token, masked by its gate and summed."""
    a = adapter
    pattern, presence = context.pattern.to(z.dtype), context.presence.to(z.dtype)
    routed = torch.cat([z, pattern.unsqueeze(1).expand(-1, z.shape[1], -1)], dim=-1)  # (N, L, D + p)
    probs = a.router_out(F.gelu(a.router_in(routed))).softmax(dim=-1)  # (N, L, E)
    gate_val, gate_idx = probs.topk(a.top_k, dim=-1)
    mix = release_style_dynamic(a, z, gate_val, gate_idx)
    for s in range(a.num_shared):
        mix = mix + (z @ a.shared_A[s]) @ a.shared_B[s]
    for m in range(a.n_modalities):
        mix = mix + presence[:, m, None, None] * ((z @ a.mod_A[m]) @ a.mod_B[m])
    return a.scale * a.out(F.gelu(mix))


def adapter_forward(model: nn.Module, forward: Callable[..., Tensor]) -> contextlib.AbstractContextManager:
    """Every MaMOL adapter of ``model`` computes Δ with ``forward(adapter, z, context)`` inside the block."""
    return patched([(a, "forward", types.MethodType(forward, a)) for a in adapters_of(model)])


def release_layout(model: RemoteModel) -> Callable[[], contextlib.AbstractContextManager]:
    """The release's step layout: every modality encoded (missing ones zeroed after), per-expert dense experts,
    open_clip's attention."""
    attention = open_clip_attention(model)

    @contextlib.contextmanager
    def layout() -> Iterator[None]:
        with patched([(model, "skip_missing", False)]), adapter_forward(model, release_adapter_forward), attention():
            yield
    return layout


def multihead_attention(attention: OpenAttention) -> nn.MultiheadAttention:
    """open_clip's batch-first ``nn.MultiheadAttention`` on the frozen tensors of ``attention`` (shared, not copies)."""
    mha = nn.MultiheadAttention(attention.embed_dim, attention.num_heads, batch_first=True)
    mha.in_proj_weight, mha.in_proj_bias = attention.in_proj_weight, attention.in_proj_bias
    mha.out_proj = attention.out_proj
    return mha.to(attention.in_proj_weight.device)


def open_clip_attention(model: RemoteModel) -> Callable[[], contextlib.AbstractContextManager]:
    """The blocks' attention as open_clip builds it (``nn.MultiheadAttention``) instead of the hosts'
    :class:`OpenAttention` (one packed qkv linear + SDPA on (N, H, L, d_h)) inside the block."""
    blocks = list(model.visual.transformer.resblocks)
    originals = [multihead_attention(b.attn) for b in blocks]
    return lambda: patched([(b, "attn", m) for b, m in zip(blocks, originals)])


def fused_adapter_forward(adapter: MaMOLAdapter, z: Tensor, context: AdapterContext) -> Tensor:
    """Δ with the router's first layer and every expert's A as ONE matmul over z, then one matmul over every
    expert's B with the gates (dynamic top-k masked, shared 1, modality presence) applied to the r columns of
    each expert: the dense formula of :func:`mamol.models.adapter.gated_lora` for all experts at once."""
    a = adapter
    pattern, presence = context.pattern.to(z.dtype), context.presence.to(z.dtype)
    d, hidden = a.dim, a.router_in.out_features
    a_all = torch.cat([a.dyn_A, a.shared_A, a.mod_A])  # (K, D, r), K = E + S + M
    b_all = torch.cat([a.dyn_B, a.shared_B, a.mod_B])  # (K, r, D)
    k, _, r = a_all.shape
    w1 = a.router_in.weight  # (H, D + p)
    weight = torch.cat([w1[:, :d], a_all.permute(0, 2, 1).reshape(k * r, d)])  # (H + K*r, D)
    u = F.linear(z, weight)  # (N, L, H + K*r): router pre-activations and every expert's z A
    per_row = F.linear(pattern, w1[:, d:], a.router_in.bias)  # (N, H), the pattern term per row
    probs = a.router_out(F.gelu(u[..., :hidden] + per_row.unsqueeze(1))).softmax(dim=-1)  # (N, L, E)
    gate_val, gate_idx = probs.topk(a.top_k, dim=-1)
    dyn = torch.zeros_like(probs).scatter(-1, gate_idx, gate_val)  # (N, L, E)
    static = torch.cat([presence.new_ones(presence.shape[0], a.num_shared), presence], dim=1)  # (N, S + M)
    gates = torch.cat([dyn, static.unsqueeze(1).expand(-1, z.shape[1], -1)], dim=-1)  # (N, L, K)
    mix = (u[..., hidden:] * gates.repeat_interleave(r, dim=-1)) @ b_all.reshape(k * r, d)  # (N, L, D)
    return a.scale * a.out(F.gelu(mix))


def compiled_blocks(model: RemoteModel) -> Callable[[], contextlib.AbstractContextManager]:
    """Each residual block of the encoder replaced by ``torch.compile(block)`` (same parameters) inside the block;
    the compilation happens on the first call."""
    blocks = model.visual.transformer.resblocks
    compiled = [torch.compile(b) for b in blocks]
    return lambda: patched([(blocks, str(i), c) for i, c in enumerate(compiled)])


def parameter_breakdown(model: RemoteModel) -> dict[str, int]:
    parts = {"tokenizers": 0, "adapters: LoRA experts": 0, "adapters: routers": 0, "adapters: output proj": 0,
             "pattern embedding": 0, "head": 0}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("tokenizers."):
            key = "tokenizers"
        elif ".adapter.router" in name:
            key = "adapters: routers"
        elif ".adapter.out." in name:
            key = "adapters: output proj"
        elif ".adapter." in name:
            key = "adapters: LoRA experts"
        elif name.startswith("method.patterns."):
            key = "pattern embedding"
        else:
            key = "head"
        parts[key] += p.numel()
    return parts


def block_bench(model: RemoteModel, rows: int, reps: int, device: torch.device) -> dict[str, float]:
    """Forward + backward of single encoder blocks on (rows, tokens, D) activations, seconds (median): a block
    without adapter, the same shapes with MaMOL's adapter, and the plain block with open_clip's attention.

    Per block the machine's noise is far smaller than over a whole step of many seconds, so these ratios
    settle what the whole-step ones leave in doubt.
    """
    blocks = model.visual.transformer.resblocks
    adapted = [b for b in blocks if hasattr(b.mlp, "adapter")]
    plain = [b for b in blocks if not hasattr(b.mlp, "adapter")]
    if not adapted or not plain:
        return {}
    context = next(iter(model.method.contexts.values()))
    g = torch.Generator().manual_seed(2)
    width = blocks[0].attn.embed_dim
    x = torch.randn(rows, PATCH * PATCH + 1, width, generator=g).to(device).requires_grad_(True)
    grad = torch.randn(x.shape, generator=g).to(device)
    pattern = model.method.patterns["image"](torch.randint(0, 3, (rows,), generator=g).to(device)).detach()
    presence = torch.ones(rows, len(MODALITIES), device=device)
    mha = multihead_attention(plain[0].attn)

    def run(block: nn.Module, attention: nn.Module | None = None) -> Callable[[], None]:
        def call() -> None:
            layout = patched([(block, "attn", attention)]) if attention is not None else contextlib.nullcontext()
            with layout, context.rows(pattern, presence):
                block(x).backward(grad)
        return call

    return interleaved({"plain": run(plain[0]), "adapted": run(adapted[0]),
                        "open_clip attention": run(plain[0], mha)}, reps, device)[0]


def adapter_floor(adapter: MaMOLAdapter, tokens: int) -> tuple[float, float]:
    """Multiply-adds per token of one adapted block's adapter (router, output projection, the experts a token
    runs) and of the frozen block, both for a training step: the frozen block's forward + input gradients (2×
    its forward), the adapter's forward + input gradients + weight gradients (3× its forward)."""
    d, r = adapter.dim, adapter.rank
    router = (d * adapter.router_in.out_features  # per token; the pattern term is added per row
              + adapter.router_out.in_features * adapter.router_out.out_features)
    experts = (adapter.top_k + adapter.num_shared + adapter.n_modalities) * 2 * d * r
    adapter_macs = router + d * d + experts  # + W_o
    block_macs = 12 * d * d + 2 * tokens * d  # qkv, out, MLP (4x); attention scores and values
    return 3 * adapter_macs, 2 * block_macs


def inside(step: Callable[[], object], *levers: Callable[[], contextlib.AbstractContextManager]
           ) -> Callable[[], None]:
    """``step`` run inside the context managers the ``levers`` return."""
    def call() -> None:
        with contextlib.ExitStack() as stack:
            for lever in levers:
                stack.enter_context(lever())
            step()
    return call


def bench(vit: str, steps: int, batch_size: int, device: torch.device, compile: bool = False) -> None:
    """Run and print the four benchmark figures for one backbone."""
    torch.manual_seed(0)
    mamol = remote_model(vit).to(device)
    plain = remote_model(vit, adapter_layers=[]).to(device)
    batch = make_batch(batch_size, device)
    codes = batch["missing_type"].tolist()
    rows = sum(len(MODALITIES) - bin(c).count("1") for c in codes)
    adapters = [m for m in mamol.modules() if isinstance(m, MaMOLAdapter)]
    a0 = adapters[0]
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"\n=== vit={vit} (random weights), device={device}{threads}, batch {batch_size}, "
          f"{'+'.join(f'{m}({c})' for m, c in zip(MODALITIES, BANDS))}, {PATCH}x{PATCH} patches ===")
    print(f"train missing 0.7/both: {codes.count(0)} complete, {codes.count(1)} HSI-missing, {codes.count(2)} "
          f"LiDAR-missing -> {rows} of {len(MODALITIES) * batch_size} (sample, modality) encoder rows")
    blocks = [i for i, b in enumerate(mamol.visual.transformer.resblocks) if hasattr(b.mlp, "adapter")]
    print(f"adapters in blocks {blocks}"
          f": D={a0.dim}, r={a0.rank}, {a0.num_dynamic} dynamic top-{a0.top_k}, {a0.num_shared} shared, "
          f"{a0.n_modalities} modality experts, router hidden {a0.router_in.out_features}")

    mamol_step, plain_step = train_step_fn(mamol, batch), train_step_fn(plain, batch)

    def with_setting(skip: bool, sparse: bool) -> Callable[[], contextlib.AbstractContextManager]:
        changes = [(mamol, "skip_missing", skip)] + [(a, "sparse", sparse) for a in adapters]
        return lambda: patched(changes)

    mha = open_clip_attention(mamol)
    # "mamol" is the library's step (the kept levers on: skipping missing modalities, batch-first attention);
    # each other variant switches one thing; "today's step" (open_clip's attention) is the step before issue 11.
    variants = {"mamol": mamol_step, "no adapters": plain_step,
                "encode all + zero": inside(mamol_step, with_setting(False, True)),
                "dense experts": inside(mamol_step, with_setting(True, False)),
                # off the CPU the library takes the dense formula for sparse experts too (no host syncs): (c) forces
                # the sparse dispatch, to show what it would cost there
                "sparse experts": inside(mamol_step, lambda: patched([(experts, "SPARSE_DEVICES",
                                                                       frozenset({device.type}))])),
                "fused adapter": inside(mamol_step, lambda: adapter_forward(mamol, fused_adapter_forward)),
                TODAY: inside(mamol_step, mha),
                "release layout": inside(mamol_step, release_layout(mamol)),
                "bf16 autocast": train_step_fn(mamol, batch, torch.bfloat16)}
    if compile:
        variants["compiled blocks"] = inside(mamol_step, compiled_blocks(mamol))
        start = time.perf_counter()
        variants["compiled blocks"]()
        first_compiled = time.perf_counter() - start
    t, c = interleaved(variants, steps, device)
    on_cpu = device.type == "cpu"
    width = max(map(len, t))
    print(f"\ntraining step (forward, loss, backward, AdamW), median of {steps} interleaved repetitions"
          + (" (wall clock | process CPU time):" if on_cpu else ":"))
    for name in t:
        print(f"  {name:<{width}}  {t[name] * 1e3:9.1f} ms" + (f"  | {c[name] * 1e3:9.1f} ms" if on_cpu else ""))

    def ratio(a: str, b: str) -> str:
        text = f"{t[a] / t[b]:.3f}x"
        return text + (f" (CPU time {c[a] / c[b]:.3f}x)" if on_cpu else "")

    print(f"(a) MaMOL / adapters removed           = {ratio('mamol', 'no adapters')}  (both with the kept levers)")
    print(f"(b) encode-all-and-zero / skip-missing = {ratio('encode all + zero', 'mamol')} faster with skipping "
          f"(row count alone: {len(MODALITIES) * batch_size / rows:.2f}x)")
    print(f"(c) step with sparse / dense experts   = {ratio('sparse experts', 'dense experts')}")
    print("(e) speed levers: the step without the lever / the step with it (> 1: the lever pays)")
    print(f"    fused adapter (router + all LoRA A in one matmul, all B in one; bench only) = unfused dense step / "
          f"fused step = {ratio('dense experts', 'fused adapter')}")
    print(f"    batch-first attention (OpenAttention: packed qkv + SDPA; kept) = today's step / our step = "
          f"{ratio(TODAY, 'mamol')}")
    print(f"    bf16 autocast (REDUCED PRECISION, opt-in precision='bf16'): fp32 step / bf16 step = "
          f"{ratio('mamol', 'bf16 autocast')}")
    if compile:
        print(f"    torch.compile of each encoder block: eager / compiled = {ratio('mamol', 'compiled blocks')}; "
              f"one-off compile ~ {first_compiled - t['compiled blocks']:.1f} s (first call {first_compiled:.1f} s)")
    else:
        print("    torch.compile of the encoder blocks: not timed (add --compile; its one-off compile takes minutes)")
    print(f"(f) release layout (encode all + zero, per-expert dense experts, open_clip attention) / our step = "
          f"{ratio('release layout', 'mamol')}")
    ra, rr = t["mamol"] / t["no adapters"], t["release layout"] / t["mamol"]
    print(f"goal MaMOL step / adapter-free step <= 1.08x: {ra:.3f}x {'met' if ra <= 1.08 else 'MISSED'}")
    print(f"goal release layout / our step >= 2x: {rr:.3f}x {'met' if rr >= 2 else 'MISSED'}")
    dyn = dynamic_expert_bench(a0, rows, PATCH * PATCH + 1, max(steps, 5), device)
    print(f"    dynamic experts alone, fwd+bwd on ({rows}, {PATCH * PATCH + 1}, {a0.dim}): sparse "
          f"{dyn['sparse'] * 1e3:.1f} ms, dense masked {dyn['dense'] * 1e3:.1f} ms, per-expert dense (release "
          f"layout) {dyn['per-expert'] * 1e3:.1f} ms -> sparse/dense {dyn['sparse'] / dyn['dense']:.2f}x, "
          f"sparse/per-expert {dyn['sparse'] / dyn['per-expert']:.2f}x")

    per_block = block_bench(mamol, rows, max(steps, 10), device)
    if per_block:
        adapter_macs, block_macs = adapter_floor(a0, PATCH * PATCH + 1)
        n_adapted, n_blocks = len(blocks), len(mamol.visual.transformer.resblocks)
        floor = 1 + n_adapted * adapter_macs / (n_blocks * block_macs)
        print(f"    one block alone, fwd+bwd on ({rows}, {PATCH * PATCH + 1}, {a0.dim}): plain "
              f"{per_block['plain'] * 1e3:.1f} ms, with MaMOL's adapter {per_block['adapted'] * 1e3:.1f} ms "
              f"({per_block['adapted'] / per_block['plain']:.3f}x; multiply-adds "
              f"{1 + adapter_macs / block_macs:.3f}x), with open_clip's attention "
              f"{per_block['open_clip attention'] * 1e3:.1f} ms (OpenAttention "
              f"{per_block['open_clip attention'] / per_block['plain']:.3f}x faster)")
        print(f"    arithmetic floor of (a) for a training step ({n_adapted} of {n_blocks} blocks adapted; adapter "
              f"weights get gradients, frozen weights do not): {floor:.3f}x")

    parts = parameter_breakdown(mamol)
    total = sum(parts.values())
    print(f"(d) trainable parameters: {total:,} ({total / 1e6:.2f} M, this implementation on Houston 2013 shapes; "
          f"the release states no count)")
    for name, n in parts.items():
        print(f"      {name:<24} {n:>11,}")
    frozen = sum(p.numel() for p in mamol.parameters() if not p.requires_grad)
    print(f"      frozen backbone (image tower) {frozen:,}")
    for name in ("mamol", "no adapters", "encode all + zero", "release layout"):
        mib, how = peak_memory(variants[name], device)
        print(f"    peak memory of one training step, {name:<18} {mib:9.1f} MiB ({how})")


def longest_sequence(model: RemoteModel, batch: dict) -> int:
    """The longest token sequence any encoder block runs on in one forward of ``batch`` (prompts included)."""
    seen: list[int] = []
    hooks = [block.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
             for block in model.visual.transformer.resblocks]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return max(seen)


def budget_table(vit: str, methods: list[str]) -> None:
    """Trainable parameters of each method at its default sizes and at ``budget=matched`` (MaMOL's count), on the
    Houston shapes, counted on the meta device (:mod:`mamol.methods.budget`); a refusal is printed as such."""
    print(f"\n=== trainable parameters at vit={vit}, Houston 2013 shapes: default and budget=matched ===")
    print("\n| method | default | matched: capacity | matched | vs mamol |")
    print("|---|---:|---:|---:|---:|")
    info = [houston_info()]
    for name in ["mamol", *[m for m in methods if m != "mamol"]]:  # the reference first, always counted
        variants = [(name, {})] + ([("dcp (release)", {"dcp_variant": "release"})] if name == "dcp" else [])
        for label, extra in variants:
            cfg = defaults("remote", vit=vit, clip_random_init=True, method=name, **extra)
            backbone, model, method = resolve_model(cfg, "remote", method_class(name).Options)
            default = budget.count(backbone, model, method, info)
            try:
                matched = budget.settle(cfg, "remote", backbone, model, dataclasses.replace(method, budget="matched"),
                                        info).capacity
                row = (f"{matched['key']}={matched['value']} | {matched['parameters']:,} | "
                       f"{matched['parameters'] / matched['reference_parameters'] - 1:+.2%}")
            except ConfigError:
                why = "no capacity key" if method.options.CAPACITY is None else "closest value outside ±5 %"
                row = f"refused: {why} | — | —"
            print(f"| {label} | {default:,} | {row} |")


def method_table(vit: str, methods: list[str], steps: int, batch_size: int, device: torch.device) -> None:
    """One row per method, all on the same batch and measured side by side with ``linear_probe``: trainable
    parameters, training-step time and its ratio to linear_probe's, peak step memory, longest sequence."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; registered: {sorted(METHODS)}")
    names = ["linear_probe", *[m for m in methods if m != "linear_probe"]]
    torch.manual_seed(0)
    models = {name: remote_model(vit, method=name).to(device) for name in names}
    batch = make_batch(batch_size, device)
    codes = batch["missing_type"].tolist()
    rows = sum(len(MODALITIES) - bin(c).count("1") for c in codes)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"\n=== methods at vit={vit} (random weights), device={device}{threads}, batch {batch_size}, "
          f"{'+'.join(f'{m}({c})' for m, c in zip(MODALITIES, BANDS))}, {PATCH}x{PATCH} patches, missing 0.7/both "
          f"-> {rows} encoder rows of {PATCH * PATCH + 1} tokens ===")
    steps_of = {name: train_step_fn(model, batch) for name, model in models.items()}
    t, c = interleaved(steps_of, steps, device)
    on_cpu = device.type == "cpu"
    print(f"training step (forward, loss, backward, AdamW): median of {steps} interleaved repetitions after a "
          f"warm-up" + ("; ratios of wall clock (process CPU time)" if on_cpu else ""))
    print("\n| method | trainable parameters | step time | / linear_probe | peak step memory | longest sequence |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        mib, _ = peak_memory(steps_of[name], device)
        ratio = f"{t[name] / t['linear_probe']:.2f}x" + (f" ({c[name] / c['linear_probe']:.2f}x)" if on_cpu else "")
        print(f"| {name} | {params:,} | {t[name]:.2f} s | {ratio} | {mib:,.0f} MiB | "
              f"{longest_sequence(model, batch)} tokens |")
    how = peak_memory(lambda: None, device)[1]
    print(f"\npeak step memory: {how}; longest sequence: tokens per encoder row in the longest block "
          f"({PATCH * PATCH + 1} without prompts)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mamol.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--vit", choices=["ViT-B/16", "tiny", "both"], default="both")
    parser.add_argument("--steps", type=int, default=10,
                        help="timed repetitions per variant (after one warm-up); use 3 for ViT-B/16 on a CPU")
    parser.add_argument("--batch", type=int, default=16, help="batch size (samples)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true",
                        help="also time the encoder's blocks under torch.compile (its one-off compile takes minutes)")
    parser.add_argument("--methods", nargs="?", const=",".join(METHODS), default=None,
                        help="per-method table instead (comma-separated; all methods when no list is given)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    methods = [m.strip() for m in (args.methods or "").split(",") if m.strip()]
    if [m for m in methods if m not in METHODS]:
        parser.error(f"--methods {args.methods}: choose from {', '.join(METHODS)}")
    for vit in (["tiny", "ViT-B/16"] if args.vit == "both" else [args.vit]):
        if methods:
            budget_table(vit, methods)
            method_table(vit, methods, args.steps, args.batch, device)
        else:
            bench(vit, args.steps, args.batch, device, args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
