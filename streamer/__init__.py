"""Streaming video chat with a bounded KV cache: frames in, answers out, constant memory."""
