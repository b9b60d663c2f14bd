"""Adaptation losses: distillation (cosine, relational, simkl, logit) and the paper's triplet loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (1.0 - (s * t).sum(1)).mean()


def _offdiag(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[1:].view(n - 1, n + 1)[:, :-1].reshape(n, n - 1)


def relational_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """MSE between the batch cosine-similarity matrices (diagonal excluded), x100 so that it is
    on the cosine loss's scale."""
    return 100.0 * F.mse_loss(_offdiag(s @ s.T), _offdiag(t @ t.T))


def simkl_loss(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between each row's softmax over its similarities to the rest of the batch."""
    log_p_s = F.log_softmax(_offdiag(s @ s.T) / temperature, dim=1)
    p_t = F.softmax(_offdiag(t @ t.T) / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean")


def triplet_loss(feats: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss on Euclidean distances (torchreid's TripletLoss)."""
    dist = torch.cdist(feats, feats).clamp(min=1e-12)
    same = labels[:, None] == labels[None, :]
    hardest_pos = (dist * same).max(1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(1).values
    valid = torch.isfinite(hardest_neg)
    if not valid.any():
        return feats.sum() * 0.0
    return F.relu(hardest_pos[valid] - hardest_neg[valid] + margin).mean()


def logit_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's logit distillation: KL(teacher || student) of the tempered softmaxes, x T^2 so that
    its gradients keep their size whatever the temperature."""
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    p_t = F.softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * (t * t)
