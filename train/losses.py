"""The tensor functions a stage-B training step is made of, apart from the model.

- `input_embeds`: token ids -> input embeddings, with the image features in the image placeholders.
- `answer_loss`: cross-entropy on the answer tokens and the fraction of answers whose tokens are all right.

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

