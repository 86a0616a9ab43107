"""The forward pass of spliced batches (stage D): events spliced into a background video whose cache is reused.

One 5-minute background video (no objects) goes through the language model once, without gradient;
its per-layer keys and values are the "background". An example with objects spliced into that video
then runs through a KV cache run by run (`segmented_hidden`): the runs near the objects are computed
with gradient over the cache so far, the others are copied from the background. Its questions are then
asked in one packed forward over that cache, each seeing the frames and itself only (`branch_hidden`).
Pure functions of a text model and tensors; tests/test_train_tiny.py checks them against one-pass
forwards. Deliberately not here: making the spliced examples (data.py), the loss and the optimiser
step (trainer.py, losses.py).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from train.data import Example


def branch_hidden(
    text_model: nn.Module, embeds: torch.Tensor, ex: Example, background: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A branch example (chat=False) with input embeddings (1, T, D): its frames go through a KV cache
    (segmented_hidden: frames near events computed, the rest copied from `background`), then all its
    questions in one packed forward over that cache, each seeing the frames and itself only (a block
    mask, and positions that restart after the frames). Returns hidden (1, Q, D) and labels (1, Q) of the
    packed questions (-100 off the answers), ready for the answer loss."""
    ids = torch.tensor(ex.input_ids, device=embeds.device)  # (T,)
    n, t = ex.starts[0], ids.numel()
    cache = DynamicCache(config=text_model.config)
    segmented_hidden(text_model, embeds[:, :n], ex.near_events()[:n].to(embeds.device), background, cache)
    branch = torch.zeros(t - n, dtype=torch.long, device=embeds.device)  # (Q,) which question a token is in
    for a in ex.starts[1:]:
        branch[a - n :] += 1
    pos = torch.arange(n, t, device=embeds.device)  # (Q,)
    pos -= torch.tensor(ex.starts, device=embeds.device)[branch] - n  # each question starts right after the frames
    own = (branch[:, None] == branch[None, :]) & (pos[:, None] >= pos[None, :])  # (Q, Q)
    mask = torch.cat([own.new_ones(t - n, n), own], dim=1)[None, None]  # (1, 1, Q, n + Q) True: may attend
    labels = torch.full((1, t - n), -100, dtype=torch.long, device=embeds.device)
    for a, b in ex.targets:
        labels[0, a - n : b - n] = ids[a:b]
    out = text_model(inputs_embeds=embeds[:, n:], attention_mask=mask, position_ids=pos[None], past_key_values=cache, use_cache=True)
    return out.last_hidden_state, labels


def segmented_hidden(
    text_model: nn.Module, embeds: torch.Tensor, grad: torch.Tensor, background: list[tuple[torch.Tensor, torch.Tensor]],
    cache: DynamicCache | None = None,
) -> torch.Tensor:
    """Last hidden states (1, T, D) of `text_model` over `embeds` (1, T, D), fed run by run through a KV
    cache (`cache`, left holding all T tokens). Runs where `grad` (T,) is True are computed, with
    gradient, over the cache so far; the others are copied from `background`: per layer (keys, values)
    (1, H_kv, >= T, D) of a forward pass without gradient over a sequence with the same tokens in those
    runs (their hidden states come back as zeros). So the few frames near events cost a forward and
    backward pass each, and the background's frames are shared by every example spliced into it."""
    cache = cache if cache is not None else DynamicCache(config=text_model.config)
    cuts = [0] + (torch.nonzero(grad[1:] != grad[:-1]).flatten() + 1).tolist() + [grad.numel()]
    hidden = []
    for a, b in zip(cuts, cuts[1:]):
        if grad[a]:
            hidden.append(text_model(inputs_embeds=embeds[:, a:b], past_key_values=cache, use_cache=True).last_hidden_state)
        else:
            for layer, (k, v) in zip(cache.layers, background):
                layer.update(k[:, :, a:b], v[:, :, a:b])  # (1, H_kv, b - a, D) appended
            hidden.append(embeds.new_zeros(1, b - a, embeds.shape[-1]))
    return torch.cat(hidden, dim=1)
