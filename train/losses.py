"""The tensor functions a stage-B training step is made of, apart from the model.

- `input_embeds`: token ids -> input embeddings, with the image features in the image placeholders.
- `answer_loss`: cross-entropy on the answer tokens and the fraction of answers whose tokens are all right.
- `word_loss`: pulls the first image-token slots toward the embeddings of the words for what a frame shows.

Both take the embedding / output matrix (V, D) as an argument (the trainer's, with its trainable new
token rows), so they are pure functions of tensors. Deliberately not here: the model and the vision
tower, the data, the optimiser (trainer.py), the spliced forward (splice.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def input_embeds(ids: torch.Tensor, feats: torch.Tensor, weight: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """(B, T) token ids -> (B, T, D) input embeddings from `weight` (V, D), `feats` (n_images, 9, D) in the
    image placeholders (`image_token_id`) in the order they appear."""
    embeds = F.embedding(ids, weight)  # (B, T, D)
    image_mask = (ids == image_token_id).unsqueeze(-1)  # (B, T, 1)
    return embeds.masked_scatter(image_mask, feats.reshape(-1, feats.shape[-1]).to(embeds.dtype))


def answer_loss(hidden: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cross-entropy of hidden (B, T, D) against labels (B, T) (-100 off the answers), logits from the
    output matrix `weight` (V, D); also the fraction of answers (runs of labelled tokens) whose tokens are
    all right."""
    target = labels[:, 1:]  # (B, T-1): token t+1 is predicted at t
    sel = target != -100
    logits = hidden[:, :-1][sel].float() @ weight.t()  # (n_answer_tokens, V)
    loss = F.cross_entropy(logits, target[sel])
    with torch.no_grad():
        wrong = torch.zeros_like(target, dtype=torch.bool)
        wrong[sel] = logits.argmax(-1) != target[sel]
        # an answer is a run of labelled tokens; it is right when none of its tokens is wrong
        starts = sel & ~torch.cat([torch.zeros_like(sel[:, :1]), sel[:, :-1]], dim=1)  # (B, T-1) answer starts
        answer_id = starts.flatten().cumsum(0).view_as(sel)  # which answer each token belongs to
        bad = torch.zeros(int(starts.sum()) + 1, dtype=torch.bool, device=sel.device)
        bad[answer_id[wrong]] = True
    n = int(starts.sum())
    return loss, (n - int(bad[1:].sum())) / n


def word_loss(
    feats: torch.Tensor, rows: list[torch.Tensor], targets: list[torch.Tensor], filler: torch.Tensor, rms: float,
    temperature: float = 0.05, ce_weight: float = 0.1,
) -> tuple[torch.Tensor, list[float]]:  # fmt: skip
    """Auxiliary loss that makes a frame's image tokens read like words: slot k of `feats` (n, S, D)
    should be the row `targets[k]` (n,) of `rows[k]` (n_k, D), the embeddings of slot k's candidate words
    (e.g. slot 0: " red", " green", ... " nothing"); the other slots the `filler` row (D,). Squared error
    in units of the embeddings' `rms`, plus `ce_weight` x cross-entropy of each word slot over its
    candidates by cosine / `temperature` (so the candidates stay apart). Returns (loss, per word slot the
    fraction of frames whose nearest candidate is the target)."""
    loss, acc = feats.new_zeros(()), []
    for slot, (cand, target) in enumerate(zip(rows, targets)):
        out = feats[:, slot]  # (n, D)
        loss = loss + (out - cand[target]).pow(2).mean() / rms**2
        logits = F.normalize(out, dim=-1) @ F.normalize(cand, dim=-1).t() / temperature  # (n, n_k)
        loss = loss + ce_weight * F.cross_entropy(logits, target)
        acc.append(float((logits.argmax(-1) == target).float().mean()))
    rest = feats[:, len(rows):]  # (n, S - len(rows), D)
    if rest.shape[1]:
        loss = loss + (rest - filler).pow(2).mean() / rms**2
    return loss, acc
