"""The MaMOL adapter (SPEC §5.3): missing-aware mixture of LoRA experts beside the frozen MLP of a CLIP block.

A frozen open_clip block computes ``h = x + attn(ln_1(x)); out = h + mlp(ln_2(h))``. We replace ``block.mlp``
by :class:`MLPWithAdapter`, which returns ``mlp(z) + Δ(z, e)`` for ``z = ln_2(h)``, so the block becomes
``out = h + MLP(z) + Δ(z, e)`` without copying open_clip's code. The frozen MLP keeps its own activation
(QuickGELU for CLIP) and its parameter names (``...resblocks.6.mlp.c_fc.weight`` stays as in open_clip);
the adapter lives under ``...resblocks.6.mlp.adapter``.

Δ for a token ``z`` (D) of a row whose sample has missing-pattern embedding ``e`` (p) and presence ``π`` (M):

* LoRA expert ``E(z) = (z A) B`` with ``A`` (D, r) and ``B`` (r, D), both N(0, 0.02²), no α/r scaling;
* dynamic experts: router ``g = softmax(W2 · GELU(W1 [z ; e]))`` over ``N_dyn`` experts, per token; the top-k
  gates are kept as they are (not renormalised): ``dyn = Σ_{k ∈ topk} g_k E_k(z)``;
* static experts: ``num_shared`` shared experts always on, plus one expert per modality, on iff that
  modality is present in the row's sample: ``spec = Σ_m π_m E_m(z)``;
* ``Δ = scale · (W_o · GELU(dyn + shared + spec) + b_o)``.

Ablations (MaMOL's keys ``use_dynamic_experts``, ``use_shared_experts``, ``use_modality_experts``,
``router_uses_pattern``): each group of experts can be left out (its term is then absent from the sum, and
its parameters are not created), and the router can read the token alone, ``g = softmax(W2 · GELU(W1 z))``.
The gate ``π`` is whatever the caller puts into the context: presence, or the release's threshold on the
pattern embedding (``mamol.methods.mamol``).

The expert sums are module-level functions (:func:`gated_lora`, :func:`sparse_topk_lora`,
:func:`dense_topk_lora`, :func:`balance_loss`) so that other mixtures (``mamol.methods.moe_lora``) use the same
tested code.

The per-row conditioning (``e`` and ``π``) is held by an :class:`AdapterContext` shared by the adapters of
one encoder and set around each encoder call (``with context.rows(e, presence): encoder(x)``), because
open_clip's blocks only pass the token tensor down to the MLP. (So open_clip's gradient checkpointing, which
re-runs blocks during backward after the context is cleared, is not supported.)

Where SPEC is silent: the router (W1, W2) and output projection (W_o, b_o) use PyTorch's default Linear init.
Sparse and dense dynamic experts are the same function (tests check outputs and gradients). At LoRA ranks an
expert's work per token (2·D·r multiply-adds) is small next to moving the token's D values to its expert, so
the dense masked formula — one matmul pair over all experts' stacked A/B — is often faster per layer than the
sparse gather/scatter; the difference is under 1 % of a ViT-B/16 training step (``python -m mamol.bench``, c).
The sparse split sizes are counted on the host, a synchronisation per adapted block on a GPU, so ``sparse``
applies on the CPU only (:data:`SPARSE_DEVICES`); every other device takes the dense formula.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamol.errors import ConfigError
from mamol.missing import missing_bits


class PatternEmbedding(nn.Module):
    """Missing-pattern embedding ``e = Linear(code features -> dim)``, one per encoder.

    Two modalities: a one-hot over the three codes {0 complete, 1 first missing, 2 second missing}.
    Three or more: the M-bit missing vector (bit i = modality i missing), as the paper does for 3 modalities.
    """

    def __init__(self, n_modalities: int, dim: int = 8) -> None:
        super().__init__()
        if n_modalities < 2:
            raise ValueError(f"PatternEmbedding needs at least 2 modalities, found {n_modalities}")
        self.n_modalities = n_modalities
        in_features = 2 ** n_modalities - 1 if n_modalities == 2 else n_modalities
        self.proj = nn.Linear(in_features, dim)

    def features(self, missing_type: Tensor) -> Tensor:
        """(B,) int codes -> (B, in_features) float: one-hot (2 modalities) or missing bits (3+)."""
        code = missing_type.long()
        if self.n_modalities == 2:  # not F.one_hot: on the CPU it checks the codes' range with host reads
            return (code.unsqueeze(-1) == torch.arange(3, device=code.device)).to(self.proj.weight.dtype)  # (B, 3)
        return missing_bits(code, self.n_modalities).to(self.proj.weight.dtype)  # (B, M)

    def forward(self, missing_type: Tensor) -> Tensor:
        """(B,) int codes -> (B, dim)."""
        return self.proj(self.features(missing_type))


class AdapterContext:
    """Per-row conditioning for the adapters of one encoder: pattern embedding (N, p) and presence (N, M).

    Row ``n`` of the tensors belongs to row ``n`` of the token batch the encoder is called on. Not a module:
    it holds no parameters, only the tensors of the current call.
    """

    def __init__(self) -> None:
        self.pattern: Tensor | None = None  # (N, p)
        self.presence: Tensor | None = None  # (N, M) float, 1 = modality present in the row's sample

    @contextlib.contextmanager
    def rows(self, pattern: Tensor, presence: Tensor) -> Iterator[None]:
        """Set the conditioning for one encoder call; cleared afterwards."""
        if pattern.ndim != 2 or presence.ndim != 2 or pattern.shape[0] != presence.shape[0]:
            raise ValueError(f"AdapterContext.rows expects pattern (N, p) and presence (N, M), "
                             f"found {tuple(pattern.shape)} and {tuple(presence.shape)}")
        self.pattern, self.presence = pattern, presence
        try:
            yield
        finally:
            self.pattern = self.presence = None


def gated_lora(z: Tensor, a: Tensor, b: Tensor, gates: Tensor) -> Tensor:
    """Σ_j gates_j (z A_j) B_j for stacked experts a (K, D, r), b (K, r, D); gates broadcast to (N, L, K).

    One matmul pair for all K experts: the gate of expert j scales its r columns of z·[A_1 … A_K].
    """
    k, d, r = a.shape
    u = z @ a.permute(1, 0, 2).reshape(d, k * r)  # (N, L, K*r)
    u = u * gates.repeat_interleave(r, dim=-1)  # (N|1, L|1, K*r) broadcast
    return u @ b.reshape(k * r, -1)  # (N, L, D)


def dense_topk_lora(z: Tensor, a: Tensor, b: Tensor, gate_val: Tensor, gate_idx: Tensor) -> Tensor:
    """Dense masked formula: every expert of a (E, D, r), b (E, r, D) on every token, times its top-k gate.

    gate_val, gate_idx (N, L, k): the kept gates and their experts; gates outside the top-k are zero.
    """
    gates = torch.zeros(*z.shape[:-1], a.shape[0], dtype=z.dtype, device=z.device)
    gates = gates.scatter(-1, gate_idx, gate_val.to(z.dtype))  # (N, L, E), zero outside the top-k
    return gated_lora(z, a, b, gates)


def sparse_topk_lora(z: Tensor, a: Tensor, b: Tensor, gate_val: Tensor, gate_idx: Tensor,
                     base: Tensor | None = None) -> Tensor:
    """Same sum as :func:`dense_topk_lora`, each expert computed only on the tokens that selected it; result
    added to ``base`` (N, L, D).

    Assignments are sorted by expert, the selected tokens gathered once, each expert runs on its contiguous
    block, and the weighted outputs are scattered back with one ``index_add``.
    """
    n, length, d = z.shape
    top_k = gate_idx.shape[-1]
    flat = z.reshape(n * length, d)  # (T, D)
    expert = gate_idx.reshape(-1)  # (T*k,) expert of each (token, slot) assignment
    order = expert.argsort(stable=True)  # assignments grouped by expert
    token = torch.div(order, top_k, rounding_mode="floor")  # (T*k,) token of each sorted assignment
    gate = gate_val.reshape(-1)[order].to(z.dtype).unsqueeze(-1)  # (T*k, 1)
    counts = torch.bincount(expert, minlength=a.shape[0]).tolist()
    picked = flat.index_select(0, token)  # (T*k, D)
    outs = [((x @ a[e]) * g) @ b[e]  # (n_e, D), only the tokens routed to expert e
            for e, (x, g) in enumerate(zip(picked.split(counts), gate.split(counts)))]
    acc = flat.new_zeros(n * length, d) if base is None else base.reshape(n * length, d)
    # Under autocast the expert matmuls give the autocast dtype while z (so acc) or base may still be float32;
    # index_add needs one dtype, so the expert outputs join the accumulator's.
    return acc.index_add(0, token, torch.cat(outs).to(acc.dtype)).reshape(n, length, d)


SPARSE_DEVICES = frozenset({"cpu"})
"""Device types on which ``sparse`` experts take :func:`sparse_topk_lora`. Its split sizes are counted on the
host (``bincount().tolist()``), which on a GPU waits for all queued work at every adapted block; elsewhere the
same sum comes from :func:`dense_topk_lora`, which reads nothing on the host (outputs equal within float
rounding, tests/models/test_adapter.py)."""


def dispatches_sparsely(device: torch.device) -> bool:
    """Whether work split by routing (each expert or set on its own tokens or rows) runs on ``device``, whose host
    reads of split sizes are cheap (:data:`SPARSE_DEVICES`); elsewhere the sync-free dense formula runs."""
    return device.type in SPARSE_DEVICES


def topk_lora(z: Tensor, a: Tensor, b: Tensor, gate_val: Tensor, gate_idx: Tensor, base: Tensor | None = None,
              sparse: bool = True, anywhere: bool = False) -> Tensor:
    """Σ over each token's top-k experts of gate · (z A_e) B_e, added to ``base`` (N, L, D) if given: sparse where
    ``sparse`` asks and the device allows it (:data:`SPARSE_DEVICES`, or any device with ``anywhere``: real
    dispatch, paying a host read per call on a GPU), else the sync-free dense masked formula."""
    if sparse and (anywhere or dispatches_sparsely(z.device)):
        return sparse_topk_lora(z, a, b, gate_val, gate_idx, base)
    out = dense_topk_lora(z, a, b, gate_val, gate_idx)  # (N, L, D)
    return out if base is None else base + out


def balance_loss(probs: Tensor, gate_idx: Tensor) -> Tensor:
    """Switch-style load balance ``E · Σ_e f_e · P_e`` (1 when uniform): f_e share of the top-k assignments,
    P_e mean router probability; probs (N, L, E), gate_idx (N, L, k)."""
    experts = probs.shape[-1]
    chosen = gate_idx.reshape(-1)
    # Counted with scatter_add, not bincount: CUDA's bincount reads the indices' maximum on the host (a sync).
    frac = torch.zeros(experts, dtype=torch.long, device=chosen.device).scatter_add(0, chosen,
                                                                                   torch.ones_like(chosen))
    frac = frac.to(probs.dtype) / gate_idx.numel()
    mean_prob = probs.reshape(-1, experts).mean(dim=0)
    return experts * (frac * mean_prob).sum()


def clear_aux_loss(layers: Sequence[nn.Module]) -> None:
    """Forget the layers' ``aux_loss``: at the start of each forward of the model, so a layer of a tower the batch
    skips (every row missing that modality) holds no term of an earlier step, whose graph backward has freed."""
    for layer in layers:
        layer.aux_loss = None


def weighted_aux_loss(layers: Sequence[nn.Module], weight: float) -> Tensor | None:
    """``weight`` × the mean of the layers' ``aux_loss`` of the last training forward (None when off or none);
    layers that did not run in it hold None (:func:`clear_aux_loss`)."""
    terms = [layer.aux_loss for layer in layers if layer.aux_loss is not None]
    return weight * torch.stack(terms).mean() if weight > 0 and terms else None


class MaMOLAdapter(nn.Module):
    """Δ(z, e): dynamic top-k LoRA experts + shared + gated modality experts + output projection.

    Args:
        dim: token width D of the block.
        n_modalities: M, number of modality-specific experts (code order of the dataset).
        rank: LoRA rank r.
        num_dynamic: N_dyn, routed experts.
        top_k: experts kept per token (gates not renormalised).
        num_shared: always-on experts.
        pattern_dim: p, width of the missing-pattern embedding.
        router_hidden: hidden width of the router MLP (None -> D // 2).
        scale: multiplies Δ (1.0 remote, 0.2 natural data).
        sparse: compute each dynamic expert only on the tokens that selected it (True; on the CPU only, see
            :data:`SPARSE_DEVICES`) or every expert on every token, masked by the gates (False, the dense reference
            formula).
        init_std: std of the LoRA matrices' normal init.
        dynamic: have the routed experts and their router (False: ablation, no dynamic term).
        modality_experts: have the M modality experts (False: ablation, no modality term).
        pattern_router: the router reads [z ; e] (True, the method) or the token z alone (False: ablation).
    """

    def __init__(self, dim: int, n_modalities: int, rank: int = 8, num_dynamic: int = 2, top_k: int = 1,
                 num_shared: int = 1, pattern_dim: int = 8, router_hidden: int | None = None, scale: float = 1.0,
                 sparse: bool = True, init_std: float = 0.02, dynamic: bool = True, modality_experts: bool = True,
                 pattern_router: bool = True) -> None:
        super().__init__()
        if dynamic and (num_dynamic < 1 or not 1 <= top_k <= num_dynamic):
            raise ValueError(f"need num_dynamic_experts >= 1 and 1 <= top_k <= num_dynamic_experts, "
                             f"found num_dynamic_experts={num_dynamic}, top_k={top_k}")
        if rank < 1 or num_shared < 0 or n_modalities < 1:
            raise ValueError(f"need adapter_rank >= 1, num_shared_experts >= 0, n_modalities >= 1; found "
                             f"{rank}, {num_shared}, {n_modalities}")
        hidden = router_hidden or dim // 2
        self.dim, self.rank, self.top_k, self.scale, self.sparse = dim, rank, top_k, float(scale), sparse
        self.num_dynamic = num_dynamic if dynamic else 0
        self.num_shared, self.n_modalities = num_shared, n_modalities
        self.dynamic, self.modality_experts, self.pattern_router = dynamic, modality_experts, pattern_router

        def lora(n: int, rows: int, cols: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(n, rows, cols) * init_std)

        if dynamic:
            self.dyn_A, self.dyn_B = lora(num_dynamic, dim, rank), lora(num_dynamic, rank, dim)  # (E, D, r), (E, r, D)
        self.shared_A, self.shared_B = lora(num_shared, dim, rank), lora(num_shared, rank, dim)  # (S, D, r), ...
        if modality_experts:
            self.mod_A, self.mod_B = lora(n_modalities, dim, rank), lora(n_modalities, rank, dim)  # (M, D, r), ...
        if dynamic:
            self.router_in = nn.Linear(dim + (pattern_dim if pattern_router else 0), hidden)  # W1 over [z ; e] or z
            self.router_out = nn.Linear(hidden, num_dynamic)  # W2
        self.out = nn.Linear(dim, dim)  # W_o, b_o
        self.balance = False  # compute the load-balancing statistic in training (set by the model)
        self.aux_loss: Tensor | None = None  # load-balancing term of the last training forward

    def extra_repr(self) -> str:
        ablated = [name for name, on in (("dynamic", self.dynamic), ("modality experts", self.modality_experts),
                                         ("pattern in router", self.pattern_router or not self.dynamic)) if not on]
        return (f"dim={self.dim}, rank={self.rank}, dynamic={self.num_dynamic}, top_k={self.top_k}, "
                f"shared={self.num_shared}, modalities={self.n_modalities if self.modality_experts else 0}, "
                f"scale={self.scale}, sparse={self.sparse}" + (f", without {', '.join(ablated)}" if ablated else ""))

    # ---------------------------------------------------------------- pieces
    def route(self, z: Tensor, pattern: Tensor) -> Tensor:
        """Router probabilities (N, L, N_dyn) for tokens z (N, L, D) and row embeddings (N, p).

        Without ``pattern_router`` the router reads z alone and ``pattern`` is ignored.
        """
        if not self.pattern_router:
            return self.router_out(F.gelu(self.router_in(z))).softmax(dim=-1)  # (N, L, E)
        w1 = self.router_in.weight  # (H, D + p); W1 [z ; e] = W1_z z + W1_e e, without building [z ; e]
        per_row = F.linear(pattern, w1[:, self.dim:], self.router_in.bias)  # (N, H)
        hidden = F.linear(z, w1[:, :self.dim]) + per_row.unsqueeze(1)  # (N, L, H)
        return self.router_out(F.gelu(hidden)).softmax(dim=-1)  # (N, L, E)

    _gated_lora = staticmethod(gated_lora)

    def static_experts(self, z: Tensor, presence: Tensor) -> Tensor:
        """Σ shared + Σ_m π_m · modality expert m, for z (N, L, D), presence (N, M) -> (N, L, D)."""
        gates = [presence.new_ones(presence.shape[0], self.num_shared)]
        a, b = [self.shared_A], [self.shared_B]
        if self.modality_experts:
            gates.append(presence)
            a.append(self.mod_A)
            b.append(self.mod_B)
        if sum(x.shape[0] for x in a) == 0:
            return torch.zeros_like(z)
        return gated_lora(z, torch.cat(a), torch.cat(b), torch.cat(gates, dim=1).unsqueeze(1))  # (S+M) experts

    def dynamic_dense(self, z: Tensor, gate_val: Tensor, gate_idx: Tensor) -> Tensor:
        """Dense masked formula: every dynamic expert on every token, times its (top-k masked) gate."""
        return dense_topk_lora(z, self.dyn_A, self.dyn_B, gate_val, gate_idx)

    def dynamic_sparse(self, z: Tensor, gate_val: Tensor, gate_idx: Tensor, base: Tensor | None = None) -> Tensor:
        """Top-k experts computed only on the tokens that selected them; result added to ``base`` (N, L, D)."""
        return sparse_topk_lora(z, self.dyn_A, self.dyn_B, gate_val, gate_idx, base)

    # ---------------------------------------------------------------- forward
    def forward(self, z: Tensor, context: AdapterContext) -> Tensor:
        """Δ for tokens z (N, L, D) whose rows are described by ``context`` -> (N, L, D)."""
        if context.pattern is None or context.presence is None:
            raise RuntimeError("MaMOLAdapter called outside an AdapterContext.rows(...) block: call the encoder "
                               "through the method's run_blocks, which sets the per-row missing pattern")
        if context.pattern.shape[0] != z.shape[0]:
            raise RuntimeError(f"adapter context has {context.pattern.shape[0]} rows but the tokens have "
                               f"{z.shape[0]}; the encoder must be batch-first")
        mix = self.static_experts(z, context.presence.to(z.dtype))  # (N, L, D)
        self.aux_loss = None
        if self.dynamic:
            probs = self.route(z, context.pattern.to(z.dtype))  # (N, L, E)
            gate_val, gate_idx = probs.topk(self.top_k, dim=-1)  # (N, L, k)
            mix = topk_lora(z, self.dyn_A, self.dyn_B, gate_val, gate_idx, base=mix, sparse=self.sparse)
            if self.balance and self.training:
                self.aux_loss = balance_loss(probs, gate_idx)
        return self.scale * self.out(F.gelu(mix))


class MLPWithAdapter(nn.Module):
    """``mlp(z) + adapter(z, context)`` (``adapter(z)`` without a context): replaces a frozen open_clip block's
    ``mlp``.

    The frozen MLP's layers are re-registered under their own names (``c_fc``, ``gelu``, ``c_proj``), so the
    backbone's state-dict keys are unchanged by the injection.
    """

    def __init__(self, mlp: nn.Sequential, adapter: nn.Module, context: AdapterContext | None) -> None:
        super().__init__()
        self._mlp_names = [name for name, _ in mlp.named_children()]
        for name, layer in mlp.named_children():
            self.add_module(name, layer)
        self.adapter = adapter
        self.context = context

    def frozen_mlp(self, z: Tensor) -> Tensor:
        """The original MLP, layer by layer in its order."""
        for name in self._mlp_names:
            z = getattr(self, name)(z)
        return z

    def forward(self, z: Tensor) -> Tensor:
        delta = self.adapter(z) if self.context is None else self.adapter(z, self.context)
        return self.frozen_mlp(z) + delta


def resolve_layers(layers: Sequence[int] | None, depth: int, key: str, default: Sequence[int]) -> list[int]:
    """Block indices for config ``key`` in a transformer of ``depth`` blocks (negative indices count from the end).

    ``None`` -> ``default``. Raises a ValueError naming the key for out-of-range or repeated indices.
    """
    values = list(default if layers is None else layers)
    out = []
    for i in values:
        if not isinstance(i, int) or isinstance(i, bool) or not -depth <= i < depth:
            raise ConfigError(f"{key}={values}: block {i!r} does not exist in a {depth}-block encoder "
                             f"(valid 0..{depth - 1} or -{depth}..-1); for this backbone e.g. {key}="
                             f"{list(range(depth // 2, depth))} or {key}=None for the default")
        out.append(i % depth)
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}={values} names a block twice")
    return sorted(out)


def inject_adapters(transformer: nn.Module, layers: Sequence[int], make_adapter: Callable[[], nn.Module],
                    context: AdapterContext | None) -> list[nn.Module]:
    """Replace ``transformer.resblocks[i].mlp`` by :class:`MLPWithAdapter` for each ``i`` in ``layers``.

    ``make_adapter()`` builds one adapter per block (a :class:`MaMOLAdapter`, or any module called as
    ``adapter(z, context)``, or ``adapter(z)`` when ``context`` is None).
    """
    if not getattr(transformer, "batch_first", False):
        raise ValueError("adapters need a batch-first open_clip Transformer (rows = samples)")
    adapters = []
    for i in layers:
        block = transformer.resblocks[i]
        if isinstance(block.mlp, MLPWithAdapter):
            raise ValueError(f"block {i} already has an adapter")
        if not isinstance(block.mlp, nn.Sequential):
            raise ValueError(f"block {i}: expected open_clip's nn.Sequential MLP, found {type(block.mlp).__name__}")
        adapter = make_adapter()
        block.mlp = MLPWithAdapter(block.mlp, adapter, context)
        adapters.append(adapter)
    return adapters
