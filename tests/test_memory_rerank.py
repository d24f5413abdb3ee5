"""The reranking stage: the first search's best passages read again more closely, so a passage that
only shares the question's words no longer outranks the one that answers it; set in the config."""

from __future__ import annotations

import pytest

from app.config import DEFAULT_CONFIG_TEXT, MemoryConfig, parse_config
from app.errors import LanternError


def test_the_rerank_settings_are_read_from_the_config_file_and_bad_ones_are_refused():
    config = parse_config('[memory]\nrerank = "maxsim"\nrerank_depth = 10\nrerank_weight = 0.25\n')
    assert (config.memory.rerank, config.memory.rerank_depth, config.memory.rerank_weight) == (
        "maxsim",
        10,
        0.25,
    )
    assert parse_config(DEFAULT_CONFIG_TEXT).memory == MemoryConfig()  # the written file says the defaults
    for bad, message in (
        ('rerank = "colbert"', "memory.rerank must be one of off, maxsim, judge"),
        ("rerank_depth = 0", "memory.rerank_depth must be positive"),
        ("rerank_weight = 1.5", "memory.rerank_weight must be between 0 and 1"),
    ):
        with pytest.raises(LanternError, match=message):
            parse_config(f"[memory]\n{bad}\n")
