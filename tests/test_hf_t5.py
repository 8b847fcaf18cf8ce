"""Our decoder mapped onto Hugging Face's T5: same logits, and HF ``generate`` with
``prefix_allowed_tokens_fn`` returns the same sessions and scores as ``beam_search_sessions``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# a dev dependency: in CI (CI=true) conftest.py stops the run when it does not import
pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install -e '.[dev]')"
)

from onerec.data.ragged import Ragged  # noqa: E402
from onerec.exceptions import ModelError  # noqa: E402
from onerec.generation import beam_search_sessions  # noqa: E402
from onerec.model import OneRec, OneRecConfig, pad_history  # noqa: E402
from onerec.model.hf_t5 import (  # noqa: E402
    SessionPrefixConstraint,
    hf_decoder_logits,
    hf_generate_sessions,
    to_hf_t5,
)
from onerec.tokenizer import SemanticIds  # noqa: E402

SIZES = [4, 4, 4]
# right-aligned histories of different lengths, one empty: padding reaches the cross-attention
HISTORY = Ragged.from_lists([[3, 5, 7, 1], [], [11, 2, 9, 9, 30, 31]])
USERS = np.array([4, 17, 9])


def catalog(n: int = 40, seed: int = 0) -> SemanticIds:
    g = torch.Generator().manual_seed(seed)
    all_codes = torch.cartesian_prod(*(torch.arange(k) for k in SIZES))  # (64, 3)
    return SemanticIds.from_codes(all_codes[torch.randperm(len(all_codes), generator=g)[:n]], SIZES)


def peaky_model(seed: int = 0, **overrides) -> OneRec:
    """A tiny model with large random weights, position biases and norm gains included:
    well-separated scores (no float ties between beams), and every mapped tensor matters."""
    torch.manual_seed(seed)
    model = OneRec(OneRecConfig.preset("tiny", SIZES, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.3)
            else:
                p.normal_(1.0, 0.2)
    return model.eval()


def encoded(model: OneRec, ids: SemanticIds) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, mask = model.layout.encode_history(pad_history(HISTORY, 20), ids.codes)
    with torch.no_grad():
        return model.encode(tokens, mask, torch.as_tensor(USERS))


MODELS = [
    pytest.param(dict(n_experts=0), id="dense"),
    pytest.param(dict(n_experts=4, top_k=2), id="moe"),
    pytest.param(dict(n_experts=0, tie_embeddings=False), id="untied-head"),
]


@pytest.mark.parametrize("overrides", MODELS)
def test_teacher_forced_logits_match(overrides):
    ids = catalog()
    model = peaky_model(**overrides)
    memory, mask = encoded(model, ids)
    hf = to_hf_t5(model)
    rows = torch.randint(ids.n_items, (3, 3), generator=torch.Generator().manual_seed(1))
    codes = ids.codes[rows]
    decoder_input = model.layout.session_input(codes, as_codes=True)
    with torch.no_grad():
        ours = model.logits(model.decode(memory, mask, decoder_input))
    theirs = hf_decoder_logits(hf, model, memory, mask, decoder_input)
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize("overrides", MODELS[:2])
def test_hf_generate_returns_our_sessions_and_scores(overrides):
    ids = catalog()
    model = peaky_model(seed=2, **overrides)
    ours = beam_search_sessions(model, HISTORY, USERS, ids, beam_size=8, n_items=3)
    memory, mask = encoded(model, ids)
    hf = to_hf_t5(model)
    constraint = SessionPrefixConstraint(ids, model.layout)
    theirs = hf_generate_sessions(hf, model, memory, mask, constraint, beam_size=8, n_items=3)
    assert torch.isfinite(ours.log_probs).all()
    assert torch.equal(theirs.items, ours.items)
    assert torch.equal(theirs.codes, ours.codes)
    torch.testing.assert_close(theirs.log_probs, ours.log_probs, atol=1e-4, rtol=0)
    # no item twice in a session
    s = theirs.items.sort(dim=2).values
    assert (s[..., 1:] != s[..., :-1]).all()


def test_a_model_with_decoder_context_is_refused():
    """T5's decoder has no place for the newest item's state at BOS: mapping such a model
    would silently compute another decoder, so it is refused by name."""
    with pytest.raises(ModelError, match="decoder_context"):
        to_hf_t5(peaky_model(decoder_context=True))
