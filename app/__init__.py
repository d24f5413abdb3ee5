"""Lantern core: data home, config, model store, chat runtime, conversations, CLI."""
