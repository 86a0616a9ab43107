"""`proxy`: the attention of proxy queries, accumulated (StreamMem, arXiv 2508.15717).

The question is not known while the stream arrives; the model's own assistant-turn opening for its
family (ChatML `<|im_end|>\\n<|im_start|>assistant\\n`, SmolVLM `<end_of_utterance>\\nAssistant:`) is what
any question ends with, so its queries stand in for the question's. The caller appends them to a pass
(`KVWindowCache.tag(..., probe=n)`); they score the held tokens and leave the cache with the pass.
Accumulated like `attention`, from other queries."""

from dataclasses import dataclass

from streamer.kv_scorers.attention import Attention


@dataclass(frozen=True)
class Proxy(Attention):
    name = "proxy"
    observes = "probe"
