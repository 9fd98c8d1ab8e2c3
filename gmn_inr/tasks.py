"""Downstream tasks on embeddings: the paper's classifier, retrieval metrics, a nearest-neighbour index."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    """Main paper appendix B: 3 x (linear -> batch-norm -> ReLU -> dropout) with 1024, 512, 256,
    then a linear layer to the class logits. ``[B, D] -> [B, n_classes]``."""

    def __init__(self, in_dim: int, n_classes: int, hidden: Sequence[int] = (1024, 512, 256), dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            d = h
        layers.append(nn.Linear(d, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@dataclass
class SupervisedConfig:
    """How :func:`fit_supervised` trains (AdamW, one-cycle)."""

    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    seed: int = 0


@dataclass
class ClassifierConfig(SupervisedConfig):
    """The paper's classifier: 150 epochs, hidden 1024, 512, 256, dropout."""

    epochs: int = 150
    batch_size: int = 256
    dropout: float = 0.5
    hidden: tuple = (1024, 512, 256)


def fit_supervised(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                   cfg: SupervisedConfig | None = None) -> nn.Module:
    """Cross-entropy training of ``model`` on ``inputs [N, ...]`` / ``labels [N]`` with AdamW and a
    one-cycle schedule, shuffled per epoch; batches of one are skipped (batch-norm needs two)."""
    cfg = cfg or SupervisedConfig()
    epochs, batch_size, lr, weight_decay, seed = cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.seed
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, (inputs.shape[0] + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(inputs.shape[0], generator=g)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            if idx.numel() >= 2:
                loss = F.cross_entropy(model(inputs[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
    return model.eval()


def train_classifier(z: torch.Tensor, y: torch.Tensor, n_classes: int, cfg: ClassifierConfig | None = None) -> Classifier:
    """Fit :class:`Classifier` on embeddings ``z [N, D]`` and labels ``y [N]`` (:func:`fit_supervised`).
    Embeddings are L2-normalised first (the encoder's scale is arbitrary)."""
    cfg = cfg or ClassifierConfig()
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"train_classifier needs z [N, D] and y [N], got {tuple(z.shape)} and {tuple(y.shape)}")
    if z.shape[0] < 2:
        raise ValueError("train_classifier needs at least 2 examples")
    torch.manual_seed(cfg.seed)
    model = Classifier(z.shape[1], n_classes, cfg.hidden, cfg.dropout)
    return fit_supervised(model, F.normalize(z.detach().float(), dim=-1), y, cfg)


@torch.no_grad()
def accuracy(model: Classifier, z: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``z [N, D]``, ``y [N]``."""
    if z.shape[0] == 0:
        return float("nan")
    pred = model.eval()(F.normalize(z.float(), dim=-1)).argmax(-1)
    return float((pred == y).float().mean())


def cosine_similarity_matrix(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``[Q, D] x [G, D] -> [Q, G]`` cosine similarities."""
    return F.normalize(q.float(), dim=-1) @ F.normalize(g.float(), dim=-1).t()


def object_ids(records: Sequence) -> torch.Tensor:
    """``[N]`` long: each record's object as an index into the sorted object ids, the ``q_obj`` /
    ``g_obj`` of :func:`recall_at_k`."""
    index = {o: k for k, o in enumerate(sorted({r.object_id for r in records}))}
    return torch.tensor([index[r.object_id] for r in records], dtype=torch.long)


def queries_in_gallery(q: Sequence[int], g: Sequence[int], obj: torch.Tensor) -> list[int]:
    """The indices of ``q`` whose object (``obj [N]``, e.g. :func:`object_ids`) is held by some
    index of ``g``: the queries :func:`recall_at_k` can count (one whose object the gallery lacks
    could never hit)."""
    q_t = torch.as_tensor(list(q), dtype=torch.long)
    return q_t[torch.isin(obj[q_t], obj[list(g)])].tolist()


@torch.no_grad()
def recall_at_k(q: torch.Tensor, q_obj: torch.Tensor, g: torch.Tensor, g_obj: torch.Tensor,
                ks: Sequence[int] = (1, 5, 10), exclude_self: torch.Tensor | None = None) -> dict[str, float]:
    """Instance retrieval (main paper Table 6): for each query, is an INR of the same object among
    the ``k`` nearest gallery items (cosine)? ``exclude_self [Q, G]`` (bool) masks pairs that
    must not count, e.g. a query against itself when query and gallery overlap."""
    sim = cosine_similarity_matrix(q, g)
    if exclude_self is not None:
        sim = sim.masked_fill(exclude_self, float("-inf"))
    kmax = min(max(ks), g.shape[0])
    top = sim.topk(kmax, dim=1).indices                       # [Q, kmax]
    hit = g_obj[top] == q_obj.unsqueeze(1)
    return {str(k): float(hit[:, :k].any(1).float().mean()) for k in ks}


@torch.no_grad()
def map_at_k(q: torch.Tensor, q_label: torch.Tensor, g: torch.Tensor, g_label: torch.Tensor, k: int = 10,
             exclude_self: torch.Tensor | None = None) -> float:
    """Mean average precision at ``k`` with class labels as relevance."""
    sim = cosine_similarity_matrix(q, g)
    if exclude_self is not None:
        sim = sim.masked_fill(exclude_self, float("-inf"))
    k = min(k, g.shape[0])
    top = sim.topk(k, dim=1).indices
    rel = (g_label[top] == q_label.unsqueeze(1)).float()      # [Q, k]
    prec = rel.cumsum(1) / torch.arange(1, k + 1)
    ap = (prec * rel).sum(1) / rel.sum(1).clamp(min=1)
    return float(ap.mean())


class NearestNeighbourIndex:
    """Cosine nearest-neighbour search over a store of embeddings ``[N, D]`` with keys."""

    def __init__(self, embeddings: torch.Tensor, keys: Sequence):
        if embeddings.ndim != 2 or embeddings.shape[0] != len(keys):
            raise ValueError(f"need embeddings [N, D] and N keys, got {tuple(embeddings.shape)} and {len(keys)}")
        self.z = F.normalize(embeddings.float(), dim=-1)
        self.keys = list(keys)

    def search(self, query: torch.Tensor, k: int = 10) -> list[list[tuple]]:
        """For each query ``[Q, D]`` (or ``[D]``): the ``k`` nearest ``(key, similarity)``."""
        q = F.normalize(query.float().reshape(-1, self.z.shape[1]), dim=-1)
        sim, idx = (q @ self.z.t()).topk(min(k, self.z.shape[0]), dim=1)
        return [[(self.keys[j], float(s)) for j, s in zip(row_i.tolist(), row_s.tolist())]
                for row_i, row_s in zip(idx, sim)]
