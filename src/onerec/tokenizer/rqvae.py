"""RQ-VAE semantic IDs as TIGER built them, for comparison with residual k-means.

An MLP encoder maps an item embedding to a small latent; L codebooks quantize it residually
(level l quantizes what levels < l left over); an MLP decoder reconstructs the input from the sum
of the chosen code vectors. Loss: reconstruction MSE plus, per level, the codebook and
commitment terms of VQ-VAE with a straight-through gradient. Codebooks start from k-means on the
first batch's residuals. This is the variant whose codebooks tend to collapse into an
"hourglass" (a few codes take most items) that balanced k-means avoids.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from tqdm.auto import tqdm

from onerec.exceptions import ConfigError, NotFittedError
from onerec.tokenizer.residual import SemanticIds


@dataclass(frozen=True)
class RQVAEConfig:
    levels: int = 3
    codebook_size: int = 256
    latent_dim: int = 32
    hidden: tuple[int, ...] = (512, 256, 128)
    beta: float = 0.25  # commitment weight
    epochs: int = 200
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    dedup: str = "suffix"  # as in ResidualQuantizerConfig: how colliding items are told apart
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("levels", "codebook_size", "latent_dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"RQ-VAE {name} must be >= 1, got {getattr(self, name)}")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class _RQVAE(nn.Module):
    def __init__(self, dim: int, c: RQVAEConfig) -> None:
        super().__init__()
        self.beta = c.beta
        self.encoder = _mlp([dim, *c.hidden, c.latent_dim])
        self.decoder = _mlp([c.latent_dim, *reversed(c.hidden), dim])
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(c.codebook_size, c.latent_dim) * 0.1) for _ in range(c.levels)]
        )

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes (B, L), quantized latent (B, latent), VQ loss terms summed over levels)."""
        residual, quantized = z, torch.zeros_like(z)
        codes, vq = [], z.new_zeros(())
        for book in self.codebooks:
            code = torch.cdist(residual, book).argmin(dim=1)
            e = book[code]
            vq = vq + F.mse_loss(e, residual.detach()) + self.beta * F.mse_loss(residual, e.detach())
            quantized = quantized + e
            residual = residual - e.detach()
            codes.append(code)
        return torch.stack(codes, dim=1), quantized, vq


class RQVAEQuantizer:
    """``fit(x)`` then ``encode(x) -> (N, L)`` codes and ``decode(codes) -> (N, D)``; after
    ``fit``, ``semantic_ids`` holds the catalog's codes made unique, as for
    :class:`~onerec.tokenizer.residual.ResidualKMeansQuantizer`."""

    def __init__(self, config: RQVAEConfig = RQVAEConfig()) -> None:
        self.config = config
        self.model: _RQVAE | None = None
        self.history: list[float] = []
        self.semantic_ids: SemanticIds | None = None

    @property
    def level_sizes(self) -> list[int]:
        return [self.config.codebook_size] * self.config.levels

    @property
    def codebooks(self) -> list[torch.Tensor]:
        """Code vectors per level, in the latent space (not the input space)."""
        return [b.detach() for b in self._require_fitted().codebooks]

    @property
    def device(self) -> torch.device:
        return torch.device(self.config.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def fit(self, x: torch.Tensor | np.ndarray, progress: bool = False) -> "RQVAEQuantizer":
        """Train the RQ-VAE on the catalog ``x`` (N, D) and give every item its codes;
        ``progress`` shows a bar over the epochs (off by default, like every quantizer's)."""
        c = self.config
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32, device=self.device)
        if x.ndim != 2 or len(x) == 0 or not torch.isfinite(x).all():
            raise ConfigError("RQ-VAE input must be a non-empty finite (N, D) matrix")
        # standardize each dimension: with raw embeddings of small norm the reconstruction loss
        # is too small to resist the VQ terms and every item collapses onto one code
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)
        x = (x - self.mean) / self.std
        torch.manual_seed(c.seed)
        model = _RQVAE(x.shape[1], c).to(self.device)
        sample = torch.randperm(len(x), device=self.device)[: max(c.batch_size, 4 * c.codebook_size)]
        self._init_codebooks(model, x[sample])
        opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        gen = torch.Generator(device="cpu").manual_seed(c.seed)
        for _ in tqdm(range(c.epochs), desc="training RQ-VAE", disable=not progress):
            perm = torch.randperm(len(x), generator=gen).to(self.device)
            total = 0.0
            for start in range(0, len(x), c.batch_size):
                batch = x[perm[start : start + c.batch_size]]
                z = model.encoder(batch)
                _, q, vq = model.quantize(z)
                q = z + (q - z).detach()  # straight-through
                loss = F.mse_loss(model.decoder(q), batch) + vq
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            self.history.append(total / len(x))
        self.model = model.eval()
        self.semantic_ids = SemanticIds.from_codes(
            self.encode(x * self.std + self.mean), self.level_sizes, c.dedup
        )
        return self

    @torch.no_grad()
    def _init_codebooks(self, model: _RQVAE, sample: torch.Tensor) -> None:
        from onerec.tokenizer.kmeans import kmeans

        residual = model.encoder(sample)
        for book in model.codebooks:
            k = min(book.shape[0], len(residual))
            result = kmeans(residual, k, seed=self.config.seed)
            book.data[:k] = result.centroids.to(book.dtype)
            residual = residual - book.data[torch.cdist(residual, book.data).argmin(1)]

    def _require_fitted(self) -> _RQVAE:
        if self.model is None:
            raise NotFittedError("RQ-VAE is not fitted: call fit(x) first")
        return self.model

    @torch.no_grad()
    def encode(self, x: torch.Tensor | np.ndarray, batch_size: int = 65536) -> torch.Tensor:
        model = self._require_fitted()
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32, device=self.device)
        x = (x - self.mean) / self.std
        out = [model.quantize(model.encoder(x[s : s + batch_size]))[0] for s in range(0, len(x), batch_size)]
        return torch.cat(out).cpu()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        model = self._require_fitted()
        codes = torch.as_tensor(codes)[:, : self.config.levels].to(self.device)
        latent = sum(book[codes[:, level]] for level, book in enumerate(model.codebooks))
        return (model.decoder(latent) * self.std + self.mean).cpu()

    def config_dict(self) -> dict:
        return asdict(self.config)

    # --- files ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """``rqvae.safetensors`` (weights and input scaling) and ``rqvae.json`` (config)."""
        model = self._require_fitted()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tensors["input_mean"], tensors["input_std"] = self.mean.cpu(), self.std.cpu()
        save_file(tensors, str(out / "rqvae.safetensors"))
        meta = {"format": "onerec.rqvae/1", "config": self.config_dict(), "dim": int(self.mean.numel())}
        (out / "rqvae.json").write_text(json.dumps(meta, indent=2))
        if self.semantic_ids is not None:
            self.semantic_ids.save(out / "semantic_ids.json")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "RQVAEQuantizer":
        path = Path(directory)
        meta = json.loads((path / "rqvae.json").read_text())
        config = meta["config"]
        config["hidden"] = tuple(config["hidden"])
        q = cls(RQVAEConfig(**config))
        tensors = load_file(str(path / "rqvae.safetensors"))
        q.mean, q.std = tensors.pop("input_mean").to(q.device), tensors.pop("input_std").to(q.device)
        model = _RQVAE(meta["dim"], q.config).to(q.device)
        model.load_state_dict(tensors)
        q.model = model.eval()
        if (path / "semantic_ids.json").exists():
            q.semantic_ids = SemanticIds.load(path / "semantic_ids.json")
        return q
