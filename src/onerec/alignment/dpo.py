"""The DPO loss and the sequence log-probability of whole sessions under a OneRec model.

DPO (Rafailov et al. 2023) with a reference model: for a chosen session c and a rejected one r,
``margin = beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))`` and the loss is
``-log sigmoid(margin)``. With K rejected sessions per chosen one the loss is softmax-DPO
(S-DPO, Chen et al. 2024): ``-log sigmoid(-log sum_j exp(-margin_j))``, which is plain DPO at
K = 1. A session's log-probability is the sum over its codes (teacher forcing), what beam search
scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from onerec.data.ragged import Ragged
from onerec.exceptions import AlignmentConfigError, AlignmentError
from onerec.model.onerec import OneRec
from onerec.model.tokens import pad_history
from onerec.tokenizer.residual import SemanticIds


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float,
) -> Tensor:
    """Mean (softmax-)DPO loss over pairs: chosen log-probs ``(P,)``, rejected ``(P,)`` or
    ``(P, K)`` for K negatives each."""
    if not beta > 0:
        raise AlignmentConfigError(f"beta must be > 0, got {beta}")
    if policy_rejected.ndim == 1:
        policy_rejected, reference_rejected = policy_rejected[:, None], reference_rejected[:, None]
    if policy_rejected.shape != reference_rejected.shape or policy_chosen.shape != (
        policy_rejected.shape[0],
    ):
        raise AlignmentError(
            f"chosen log-probs must be (P,) and rejected (P,) or (P, K), the same for policy and "
            f"reference; got {tuple(policy_chosen.shape)}, {tuple(policy_rejected.shape)}, "
            f"{tuple(reference_chosen.shape)}, {tuple(reference_rejected.shape)}"
        )
    chosen = (policy_chosen - reference_chosen).unsqueeze(1)  # (P, 1)
    margin = beta * (chosen - (policy_rejected - reference_rejected))  # (P, K)
    return F.softplus(torch.logsumexp(-margin, dim=1)).mean()


def session_log_probs(
    model: OneRec, semantic_ids: SemanticIds, history: Ragged, users: Any, codes: Tensor
) -> Tensor:
    """``(B, G)``: log-probability of G sessions per user, ``codes`` (B, G, m, L'), after each
    user's ``history`` (B rows, oldest first), summed over the sessions' codes. Differentiable;
    the model's train/eval mode is the caller's."""
    b, g, m, n_levels = codes.shape
    if len(history) != b:
        raise AlignmentError(f"{len(history)} histories for {b} users' sessions")
    device = next(model.parameters()).device
    padded = pad_history(history, model.config.max_history).to(device)
    tokens, mask = model.layout.encode_history(padded, semantic_ids.codes.to(device))
    users = torch.as_tensor(np.asarray(users), device=device).long()
    logp = model.code_log_probs(tokens, mask, users, codes.reshape(b * g, m, n_levels).to(device))
    return logp.sum(dim=(1, 2)).view(b, g)
