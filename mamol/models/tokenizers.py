"""Per-modality tokenizers (SPEC §5.2): a patch (C, P, P) becomes P·P tokens of the encoder width D."""
from __future__ import annotations

from torch import Tensor, nn


class ModalityTokenizer(nn.Module):
    """Conv3×3(C -> hidden, padding 1, no bias) then Conv1×1(hidden -> D, no bias), no nonlinearity between.

    Replaces CLIP's patch-embedding conv: every pixel of the patch becomes one token, in row-major order
    (the order CLIP flattens its patch grid in, so the positional table lines up).
    """

    def __init__(self, in_channels: int, width: int, hidden: int = 256) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"ModalityTokenizer needs >= 1 input channel, found {in_channels}")
        self.in_channels = in_channels
        self.conv3 = nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(hidden, width, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, P, P) -> (B, P*P, D)."""
        return self.conv1(self.conv3(x)).flatten(2).transpose(1, 2)
