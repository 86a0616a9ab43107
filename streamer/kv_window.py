"""Bounded KV cache (placeholder: being written)."""

from enum import IntEnum


class Modality(IntEnum):
    """What a cached token came from; the caller tags each appended token with one."""

    TEXT = 0
    IMAGE = 1
    OTHER = 2  # e.g. image-boundary / special tokens around frames
