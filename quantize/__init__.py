"""Conversion pipeline: GGUF in and out of torch, llama.cpp quantization, measured quality.

Data flows one way: the CLI calls in here; nothing here imports a front end.
"""
