"""The LLM twin: a LoRA adapter trained on the user's notes, exported for llama.cpp."""
