"""Conversion pipeline: GGUF in and out of torch, quantization, the LLM twin (later issues)."""
