"""Flex-MoE (Yun et al., NeurIPS 2024; ``UNITES-Lab/flex-moe`` at 8c82735): a missing-modality bank and a sparse
mixture of experts routed by a G-Router and an S-Router, adapted to the frozen CLIP towers.

Observed-modality combinations are indexed as in the source (``data.py`` ``get_modality_combinations``,
``models.py`` ``_create_combination_index``): all non-empty subsets of the M modalities, largest first, each size
in ``itertools.combinations`` order, so c = 0 is the complete sample (two modalities (a, b): 0 = ab, 1 = a, 2 = b).

**Missing-modality bank** (``main.py`` l. 76-84, 123): the tokens of a missing modality m of a sample with
combination c are a learned entry ``bank[c, m]``. Here that entry fills the tower's input tokens of the row
(:meth:`FlexMoE.fill_tokens`: the remote tokenizer's output, the image patch embedding, the text token
embedding) before the frozen class token and positions are added; the host encodes these rows too and keeps
their features (``Method.encodes_missing``).

**Sparse MoE layer** (``moe_module.py`` ``AddtionalNoisyGate.forward`` l. 221-300, ``FixedFMoE.forward``
l. 83-124), for a token z (D) after a block's ``ln_2`` (block: ``out = h + MLP(z) + Δ``):

    clean = z W_g,   std = softplus(z W_n) + 0.01   (training only; 0 in eval)      W_g, W_n (D, E), zero init
    ℓ = clean + ε · std,   ε ~ N(0, 1)                                            noisy logits
    g = softmax over the top-k of ℓ (renormalised over the k kept experts)
    Δ = scale · Σ_{e ∈ top-k(ℓ)} g_e · (z A_e) B_e

**Router losses**, per layer and per modality pass (the source's MoE runs once per modality chunk and adds its
losses; every token of a row carries its sample's combination c), over the tokens T of that pass:

    S-Router:  CE(ℓ_t, c_t) averaged over the tokens of incomplete samples (c_t > 0): pushes a token of
               combination c to expert c, the expert assigned to that combination
    G-Router:  cv²(Σ_{t: c_t=0} G_t) + cv²(Σ_{t: c_t=0} P_t)                     complete tokens, all experts
               + cv²(Σ_{t: c_t>0} G_t[1:]) + cv²(Σ_{t: c_t>0} P_t[1:])           incomplete tokens, experts 1..E-1
    cv²(x) = var(x) / (mean(x)² + 1e-10) (unbiased variance; 0 for one element)

with G_t the token's gates scattered over E (zero outside its top-k) and P_t the probability of each expert
being in the token's top-k under the noise (fastmoe ``NoisyGate._prob_in_top_k``; without noise, when
``top_k = E``, the indicator G_t > 0). The loss of the run is ``gate_loss_weight`` × the sum over layers and
passes (``main.py`` l. 92-94, ``models.py`` ``gate_loss``: a sum, not a mean).

**Adaptation** (where this file changes Flex-MoE; docs/methods.md lists them too):

* Experts are LoRA experts ``(z A) B`` beside the frozen MLP of ``adapter_layers`` (as ``moe_lora``), not FFN
  experts replacing the MLP of every other layer of a transformer trained from scratch; A, B ~ N(0, 0.02²).
* One bank vector (D) per (combination, missing modality, tower) fills every token position of the pass; the
  frozen positional embedding then tells the positions apart. The source keeps ``num_patches`` vectors per
  entry, but the token count here depends on the patch size and the text length. Entries are N(0, 0.02²) (CLIP's
  token-embedding scale; the source draws N(0, 1)), only the used (c, m) pairs are created (the source allocates
  all (2^M − 1) × M, the others receive no gradient), and the bank is not weight-decayed (the source uses Adam).
* The towers run each modality alone, so a bank-filled pass does not attend to the observed modalities as in
  Flex-MoE's fusion transformer: its feature is a learned constant per combination, given to the head.
* Sizes: E = ``num_dynamic_experts`` (default 16) and ``top_k`` (default 4) as ``run_adni_igcb.sh``; E must be
  at least the 2^M − 1 combinations (expert c serves combination c). Rank and scale are MaMOL's per data kind.
* The source's warm-up (``main.py`` l. 137-145: 5 epochs over a loader sorted by the number of observed
  modalities, complete samples first) is left out: batches here are shuffled from the first epoch.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamol.errors import ConfigError
from mamol.methods.options import PAPER, ExpertOptions, key
from mamol.missing import missing_bits
from mamol.models.adapter import clear_aux_loss, dense_topk_lora, inject_adapters, topk_lora
from mamol.models.method import Method, Rows

NOISE_EPSILON = 1e-2
"""fastmoe ``NoisyGate.noise_epsilon``: the floor of the router noise's standard deviation."""
CV_EPS = 1e-10
"""fastmoe ``NoisyGate.cv_squared``'s epsilon."""


@dataclass(frozen=True)
class FlexMoEOptions(ExpertOptions):
    """Flex-MoE's config keys: the expert sizes shared with ``mamol`` / ``moe_lora`` (Flex-MoE's 16 experts,
    top-4; MaMOL's rank, scale and blocks) and the weight of the router losses."""

    CAPACITY: ClassVar[str] = "adapter_rank"
    """The key that scales the trainable parameters (the expert count is tied to the modality combinations)."""

    gate_loss_weight: float = key(
        1e-2, "flex_moe: weight of the router losses (S-Router cross-entropy + G-Router/S-Router balance), summed "
              "over layers and modality passes; 0 = off")

    @staticmethod
    def paper_defaults(kind: str) -> dict:
        """Flex-MoE's expert count and top-k (``run_adni_igcb.sh``), MaMOL's rank and scale for the data kind."""
        return {**PAPER[kind], "num_dynamic_experts": 16, "top_k": 4, "num_shared_experts": 0}

    def check(self) -> None:
        """Each error names the keys."""
        if self.adapter_rank < 1 or not 1 <= self.top_k <= self.num_dynamic_experts:
            raise ConfigError(f"flex_moe needs adapter_rank >= 1 and 1 <= top_k <= num_dynamic_experts; found "
                              f"adapter_rank={self.adapter_rank}, top_k={self.top_k}, num_dynamic_experts="
                              f"{self.num_dynamic_experts}")
        if self.num_shared_experts or self.load_balance_weight:
            raise ConfigError(f"flex_moe has no shared experts and balances its router with gate_loss_weight: "
                              f"leave num_shared_experts ({self.num_shared_experts}) and load_balance_weight "
                              f"({self.load_balance_weight}) at 0")
        if self.gate_loss_weight < 0:
            raise ConfigError(f"gate_loss_weight must be >= 0, found {self.gate_loss_weight}")


def combination_table(n_modalities: int) -> Tensor:
    """(2^M,) int64: the Flex-MoE combination index of each missing-type code (-1 for the all-missing code).

    Combinations of observed modalities are listed largest first, each size in ``itertools.combinations`` order
    (the source's ``get_modality_combinations``), so the complete sample is 0.
    """
    combos = [c for r in range(n_modalities, 0, -1) for c in itertools.combinations(range(n_modalities), r)]
    index = {c: i for i, c in enumerate(combos)}
    # Bit m of a missing-type code marks modality m missing (mamol.missing); plain Python, so that the table
    # also builds under a meta-device context (parameter counting, mamol.methods.budget).
    observed = [tuple(m for m in range(n_modalities) if not code >> m & 1) for code in range(2 ** n_modalities)]
    return torch.tensor([index.get(o, -1) for o in observed], device="cpu")


def cv_squared(x: Tensor) -> Tensor:
    """Squared coefficient of variation ``var(x) / (mean(x)² + 1e-10)`` of a vector (0 for one element)."""
    if x.shape[0] == 1:
        return x.new_zeros(())
    x = x.float()
    return x.var() / (x.mean() ** 2 + CV_EPS)


def prob_in_top_k(clean: Tensor, noisy: Tensor, std: Tensor, top_values: Tensor, top_k: int) -> Tensor:
    """P(expert e in the token's top-k) under the router noise (fastmoe ``_prob_in_top_k``), (T, E).

    ``top_values`` (T, k+1) are the noisy logits' k+1 largest: an expert now in the top-k stays if its logit beats
    the (k+1)-th value, one outside enters if it beats the k-th.
    """
    threshold_in = top_values[:, top_k:top_k + 1]  # (T, 1)
    threshold_out = top_values[:, top_k - 1:top_k]  # (T, 1)
    is_in = noisy > threshold_in
    cdf = lambda v: 0.5 * (1 + torch.erf(v / math.sqrt(2)))  # noqa: E731  the standard normal CDF, no host read
    return torch.where(is_in, cdf((clean - threshold_in) / std), cdf((clean - threshold_out) / std))


def router_loss(logits: Tensor, gates: Tensor, load: Tensor, combination: Tensor, weight: Tensor) -> Tensor:
    """S-Router cross-entropy + G-Router/S-Router balance of one modality pass (``AddtionalNoisyGate.forward``).

    logits (T, E) noisy router logits, gates (T, E) kept gates (zero outside the top-k), load (T, E) the
    probabilities of being in the top-k, combination (T,) each token's combination index, weight (T,) 1 for the
    tokens of this pass and 0 elsewhere (masks by weights, not boolean indexing: no host read).
    """
    full = weight * (combination == 0).to(weight.dtype)  # (T,)
    partial = weight - full
    target = combination.clamp(min=0, max=logits.shape[-1] - 1)
    ce = F.cross_entropy(logits.float(), target, reduction="none")  # (T,)
    loss = (ce * partial).sum() / partial.sum().clamp(min=1)  # mean over incomplete tokens; 0 when none
    gates, load = gates.float(), load.float()
    loss = loss + cv_squared(full @ gates) + cv_squared(full @ load)  # G-Router: complete tokens, all experts
    return loss + cv_squared((partial @ gates)[1:]) + cv_squared((partial @ load)[1:])  # S-Router: experts 1..E-1


class FlexContext:
    """Per-row conditioning of the layers of one tower: each row's combination index and modality (N,)."""

    def __init__(self) -> None:
        self.combination: Tensor | None = None  # (N,) int64
        self.modality: Tensor | None = None  # (N,) int64

    @contextlib.contextmanager
    def rows(self, combination: Tensor, modality: Tensor) -> Iterator[None]:
        """Set the conditioning for one tower call; cleared afterwards."""
        self.combination, self.modality = combination, modality
        try:
            yield
        finally:
            self.combination = self.modality = None


class FlexMoELayer(nn.Module):
    """Δ(z) of one block: noisy top-k router over E LoRA experts, gates renormalised over the kept k."""

    def __init__(self, dim: int, rank: int, num_experts: int, top_k: int, scale: float, n_modalities: int,
                 sparse: bool, init_std: float = 0.02) -> None:
        super().__init__()
        self.dim, self.top_k, self.scale, self.sparse = dim, top_k, float(scale), sparse
        self.n_modalities = n_modalities
        self.A = nn.Parameter(torch.randn(num_experts, dim, rank) * init_std)  # (E, D, r)
        self.B = nn.Parameter(torch.randn(num_experts, rank, dim) * init_std)  # (E, r, D)
        self.w_gate = nn.Parameter(torch.zeros(dim, num_experts))  # W_g, fastmoe's zero init
        self.w_noise = nn.Parameter(torch.zeros(dim, num_experts))  # W_n
        self.losses = False  # compute the router losses in training (set by the method)
        self.aux_loss: Tensor | None = None

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, rank={self.A.shape[-1]}, experts={self.A.shape[0]}, top_k={self.top_k}, "
                f"scale={self.scale}, sparse={self.sparse}")

    def route(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Router of tokens z (N, L, D): clean and noisy logits, noise std (N, L, E), top-(k+1) values and
        indices of the noisy logits (N, L, k+1 or E)."""
        clean = z @ self.w_gate.to(z.dtype)  # (N, L, E)
        if self.training:
            std = F.softplus(z @ self.w_noise.to(z.dtype)) + NOISE_EPSILON
            noisy = clean + torch.randn_like(clean) * std
        else:
            std, noisy = torch.zeros_like(clean), clean
        top_values, top_idx = noisy.topk(min(self.top_k + 1, clean.shape[-1]), dim=-1)
        return clean, noisy, std, top_values, top_idx

    def forward(self, z: Tensor, context: FlexContext) -> Tensor:
        """Δ for tokens z (N, L, D) of rows described by ``context`` -> (N, L, D)."""
        if context.combination is None:
            raise RuntimeError("FlexMoELayer called outside FlexContext.rows(...): call the tower through the "
                               "method's run_blocks, which sets each row's modality combination")
        clean, noisy, std, top_values, top_idx = self.route(z)
        gate_idx = top_idx[..., :self.top_k]  # (N, L, k)
        gate_val = top_values[..., :self.top_k].softmax(dim=-1)  # (N, L, k), renormalised over the kept experts
        self.aux_loss = None
        if self.losses and self.training:
            self.aux_loss = self.router_losses(clean, noisy, std, top_values, gate_val, gate_idx, context)
        return self.scale * topk_lora(z, self.A, self.B, gate_val, gate_idx, sparse=self.sparse)

    def dense(self, z: Tensor, gate_val: Tensor, gate_idx: Tensor) -> Tensor:
        """The dense masked formula: every expert on every token times its gate (zero outside the top-k)."""
        return self.scale * dense_topk_lora(z, self.A, self.B, gate_val, gate_idx)

    def router_losses(self, clean: Tensor, noisy: Tensor, std: Tensor, top_values: Tensor, gate_val: Tensor,
                      gate_idx: Tensor, context: FlexContext) -> Tensor:
        """The sum over this call's modality passes of :func:`router_loss`."""
        n, length, experts = clean.shape
        clean, noisy, std, top_values, gate_val = (t.float() for t in (clean, noisy, std, top_values, gate_val))
        flat = lambda t: t.reshape(n * length, -1)  # noqa: E731  (N, L, X) -> (T, X)
        gates = torch.zeros_like(noisy).scatter(-1, gate_idx, gate_val)  # (N, L, E)
        if self.top_k < experts:
            load = prob_in_top_k(flat(clean), flat(noisy), flat(std), flat(top_values), self.top_k)  # (T, E)
        else:
            load = (flat(gates) > 0).to(gates.dtype)  # every expert is in the top-k: the source's gate count
        combination = context.combination.repeat_interleave(length)  # (T,) each token its sample's combination
        modality = context.modality.repeat_interleave(length)
        return sum(router_loss(flat(noisy), flat(gates), load, combination, (modality == m).to(load.dtype))
                   for m in range(self.n_modalities))


class FlexMoE(Method):
    """Flex-MoE layers beside the frozen MLP of the chosen blocks and a missing-modality bank per tower."""

    name: ClassVar[str] = "flex_moe"
    title: ClassVar[str] = "Flex-MoE"
    Options: ClassVar[type] = FlexMoEOptions
    encodes_missing: ClassVar[bool] = True

    def __init__(self, options: FlexMoEOptions, kind: str, modalities: tuple[str, ...]) -> None:
        super().__init__(options, kind, modalities)
        n = len(self.modalities)
        if options.num_dynamic_experts < 2 ** n - 1:
            raise ConfigError(f"flex_moe assigns expert c to modality combination c: num_dynamic_experts="
                              f"{options.num_dynamic_experts} must be >= the {2 ** n - 1} combinations of {n} "
                              f"modalities")
        self.register_buffer("combination", combination_table(n), persistent=False)  # (2^M,)
        self.bank = nn.ParameterDict()  # tower -> (K, D) entries of the (combination, missing modality) pairs
        self.contexts: dict[str, FlexContext] = {}
        self.layers: list[FlexMoELayer] = []  # live inside the towers' blocks; a plain list, not registered twice

    def tower_modalities(self, tower: str) -> list[int]:
        """Modalities (code-order indices) the tower encodes: all of them on remote data, its own on image–text."""
        return list(range(len(self.modalities))) if self.kind == "remote" else [self.modalities.index(tower)]

    def attach(self, tower: str, transformer: nn.Module) -> None:
        o: FlexMoEOptions = self.options
        n, width = len(self.modalities), transformer.width
        context = FlexContext()

        def make() -> FlexMoELayer:
            layer = FlexMoELayer(width, o.adapter_rank, o.num_dynamic_experts, o.top_k, o.adapter_scale, n,
                                 o.sparse_experts)
            layer.losses = o.gate_loss_weight > 0
            return layer

        self.layers += inject_adapters(transformer, o.blocks(tower, transformer, self.kind), make, context)
        self.contexts[tower] = context
        # Bank rows: every (code, modality) with that modality missing in the code and encoded by this tower.
        # Index tables on the CPU, whatever device context the model is built under (the budget's meta device).
        codes = torch.arange(2 ** n, device="cpu")
        missing = missing_bits(codes, n).bool() & (self.combination.cpu() >= 0).unsqueeze(-1)  # (2^M, M)
        own = torch.zeros(n, dtype=torch.bool, device="cpu")
        own[self.tower_modalities(tower)] = True
        used = missing & own  # (2^M, M)
        index = torch.full((2 ** n, n), -1, dtype=torch.long, device="cpu")
        index[used] = torch.arange(int(used.sum()), device="cpu")
        self.register_buffer(f"bank_index_{tower}", index, persistent=False)  # (2^M, M) row of bank, -1 unused
        self.bank[tower] = nn.Parameter(torch.randn(int(used.sum()), width) * 0.02)  # (K, D)

    def fill_tokens(self, tower: str, tokens: Tensor, rows: Rows) -> Tensor:
        """Tokens (N, L, D) with every row of a missing modality set to its bank entry at every position."""
        index = getattr(self, f"bank_index_{tower}")[rows.codes, rows.modality]  # (N,), -1 where present
        fill = self.bank[tower].to(tokens.dtype)[index.clamp(min=0)]  # (N, D)
        return torch.where((index >= 0)[:, None, None], fill.unsqueeze(1), tokens)

    def run_blocks(self, tower: str, transformer: nn.Module, x: Tensor, rows: Rows,
                   attn_mask: Tensor | None = None) -> Tensor:
        with self.contexts[tower].rows(self.combination[rows.codes], rows.modality):
            return transformer(x, attn_mask=attn_mask)

    def no_weight_decay(self) -> Iterable[nn.Parameter]:
        """The bank: embedding tables, not decayed (as MaMOL's pattern embeddings; the source uses Adam)."""
        return self.bank.parameters()

    def begin_forward(self) -> None:
        clear_aux_loss(self.layers)

    def aux_loss(self) -> Tensor | None:
        """``gate_loss_weight`` × the sum of the layers' router losses of the last training forward."""
        terms = [layer.aux_loss for layer in self.layers if layer.aux_loss is not None]
        return self.options.gate_loss_weight * torch.stack(terms).sum() if terms else None
