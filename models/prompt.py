"""Model-ready prompts and the one place that turns prompt text into aligned token tensors.

A `Prompt` is what the session feeds to the model for one step (a chunk of frames, a question, the
end of an answer): the forward kwargs plus, per token, its `Modality` and the video time of the frame
it describes. The KV-cache policies use those two tensors to tell image tokens from text and old
frames from new ones, so they must line up 1:1 with `input_ids`.

`encode_segments` tokenizes the template text of a prompt in one call (so merges across segment
boundaries are the ones the model was trained with) and attributes each token to the segment its
first character came from, using the fast tokenizer's offset mapping. User text (the question) is a
`literal` segment, tokenized on its own with special tokens split, so a question that contains
"<image>" or "<|im_end|>" cannot inject placeholders or end the turn.

Deliberately not here: chat templates (each family adapter writes its own text) and image
preprocessing (the adapters do it with their image processors).
"""

from __future__ import annotations

import bisect
from typing import Iterable

import torch

from streamer.shared_types import Modality, Segment


def encode_segments(
    tokenizer,
    segments: Iterable[Segment],
    image_token_ids: Iterable[int],
    other_token_ids: Iterable[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenize the concatenated segments and tag every token.

    Returns input_ids (1, T) long, modality (T,) int8, times (T,) float32. A token is IMAGE when its id
    is in `image_token_ids` (the placeholders that receive vision features), OTHER when in
    `other_token_ids` (image-boundary markers), else TEXT. Its time is that of the segment in which its
    first character lies. No BOS/EOS is added: the adapters write every special token themselves.
    Literal segments are tokenized separately with special-token strings kept as plain text.
    """
    segments = [s for s in segments if s.text]
    if not segments:
        raise ValueError("a prompt needs at least one non-empty segment")
    # consecutive template segments are tokenized together; a literal segment is tokenized on its own
    runs: list[list[Segment]] = []
    for seg in segments:
        if runs and not seg.literal and not runs[-1][-1].literal:
            runs[-1].append(seg)
        else:
            runs.append([seg])
    ids: list[int] = []
    time_list: list[float] = []
    for run in runs:
        run_ids, run_times = _encode_run(tokenizer, run)
        ids += run_ids
        time_list += run_times
    times = torch.tensor(time_list, dtype=torch.float32)  # (T,)

    input_ids = torch.tensor([ids], dtype=torch.long)  # (1, T)
    modality = torch.full((len(ids),), int(Modality.TEXT), dtype=torch.int8)  # (T,)
    image_ids = torch.tensor(sorted(set(image_token_ids)), dtype=torch.long)
    other_ids = torch.tensor(sorted(set(other_token_ids)), dtype=torch.long)
    if other_ids.numel():
        modality[torch.isin(input_ids[0], other_ids)] = int(Modality.OTHER)
    if image_ids.numel():
        modality[torch.isin(input_ids[0], image_ids)] = int(Modality.IMAGE)
    return input_ids, modality, times


def _encode_run(tokenizer, run: list[Segment]) -> tuple[list[int], list[float]]:
    """Tokenize the joined text of `run` in one call; each token takes the time of the segment where it starts."""
    text = "".join(s.text for s in run)
    starts = []  # character offset where each segment begins
    pos = 0
    for s in run:
        starts.append(pos)
        pos += len(s.text)
    enc = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=run[0].literal
    )
    times = []
    seg = 0
    for begin, end in enc["offset_mapping"]:
        if end > begin:
            seg = bisect.bisect_right(starts, begin) - 1
        # a token with an empty span (rare) stays with the previous token's segment
        times.append(run[seg].time_s)
    return list(enc["input_ids"]), times
