"""Conversion pipeline: GGUF in and out of torch, llama.cpp quantization, measured quality, and the
twin (LoRA and DPO on the user's notes) in `quantize.twin`.

It may import the core's model store and utilities (`app.*`) and `rag`'s note loaders, never a front end.
"""
