"""Generator and discriminator of the paper's Table 1, with a width multiplier.

Table 1 omits strides and padding for D.  ``Linear(64*7*7, 1)`` only works out if two of the
four convolutions halve the resolution, so we read it as: every conv is 3x3 with padding 1,
conv 1 and 3 keep the resolution (stride 1), conv 2 and 4 halve it (stride 2):
28 -> 28 -> 14 -> 14 -> 7.  The embedding function f is D without its Linear + Sigmoid,
f(x) in R^(64*7*7) = R^3136 at width 1.
"""
from __future__ import annotations

import torch
from torch import nn


def _ch(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class Generator(nn.Module):
    def __init__(self, z_dim: int = 100, width: float = 1.0):
        super().__init__()
        c0, c1, c2, c3 = (_ch(c, width) for c in (512, 256, 128, 64))
        self.z_dim, self.c0 = z_dim, c0
        self.fc = nn.Sequential(nn.Linear(z_dim, 7 * 7 * c0), nn.BatchNorm1d(7 * 7 * c0),
                                nn.ReLU(inplace=True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c0, c1, 3, 2, 1, 1), nn.BatchNorm2d(c1), nn.LeakyReLU(0.2, True),  # 7 -> 14
            nn.ConvTranspose2d(c1, c2, 3, 1, 1), nn.BatchNorm2d(c2), nn.LeakyReLU(0.2, True),
            nn.ConvTranspose2d(c2, c3, 3, 1, 1), nn.BatchNorm2d(c3), nn.LeakyReLU(0.2, True),
            nn.ConvTranspose2d(c3, 1, 3, 2, 1, 1), nn.Tanh(),  # 14 -> 28
        )

    @property
    def output_layer(self) -> nn.ConvTranspose2d:
        """The last transposed convolution (before Tanh)."""
        return self.net[-2]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.c0, 7, 7)  # (N, c0, 7, 7)
        return self.net(h)  # (N, 1, 28, 28) in [-1, 1]


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, True))


class Discriminator(nn.Module):
    """D = head(f(x)).  ``forward`` returns the logit; the paper's Sigmoid is folded into the
    loss (binary cross-entropy with logits), which is the same function, computed stably."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c = [_ch(b, width) for b in (8, 16, 32, 64)]
        self.blocks = nn.ModuleList([
            _block(1, c[0], 1),  # 28 -> 28
            _block(c[0], c[1], 2),  # 28 -> 14
            _block(c[1], c[2], 1),  # 14 -> 14
            _block(c[2], c[3], 2),  # 14 -> 7
        ])
        self.embed_dim = c[3] * 7 * 7
        self.head = nn.Linear(self.embed_dim, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding function f: (N, 1, 28, 28) -> (N, embed_dim)."""
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x)).squeeze(1)  # (N,) logits

    def fused_embed(self) -> nn.Sequential:
        """f for inference in eval mode, each BatchNorm folded into the conv before it: the
        same function to float rounding, ~30 % faster on the CPU (BN's pass over every
        activation is gone).  A new module, not tied to D's later updates."""
        if self.training:
            raise RuntimeError("fused_embed() folds the running statistics: call eval() first")
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        layers: list[nn.Module] = []
        for conv, bn, act in self.blocks:
            layers += [fuse_conv_bn_eval(conv, bn), act]
        return nn.Sequential(*layers, nn.Flatten(1))


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, dtypes and values)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, 0-dim too
    return h.hexdigest()


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) weights, BN scale N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
