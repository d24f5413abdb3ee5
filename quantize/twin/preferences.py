"""Preference pairs for DPO from the feedback people give in the TUI and the API.

DPO needs a chosen and a rejected answer to the same prompt. An edited answer gives both (the edit
is chosen). A thumbs-up and a thumbs-down on two answers to the same prompt make a pair too. A lone
rating has no partner and is counted, not used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class DpoPair:
    prompt: list[dict]  # the chat up to the answer, as {"role", "content"} messages
    chosen: str
    rejected: str


@dataclass(frozen=True)
class PairsFound:
    pairs: list[DpoPair]
    unpaired: int  # ratings with no answer of the other kind to the same prompt


def dpo_pairs(feedback) -> PairsFound:
    """``feedback``: app.conversations.PreferencePair records, oldest first."""
    pairs: list[DpoPair] = []
    liked: dict[str, list[str]] = {}
    disliked: dict[str, list[str]] = {}
    prompts: dict[str, list[dict]] = {}
    for item in feedback:
        if item.chosen and item.rejected:
            pairs.append(DpoPair(item.prompt, item.chosen, item.rejected))
            continue
        key = json.dumps(item.prompt, sort_keys=True)
        prompts[key] = item.prompt
        (liked if item.chosen else disliked).setdefault(key, []).append(item.chosen or item.rejected)
    unpaired = 0
    for key in set(liked) | set(disliked):
        good, bad = liked.get(key, []), disliked.get(key, [])
        for chosen, rejected in zip(good, bad, strict=False):
            pairs.append(DpoPair(prompts[key], chosen, rejected))
        unpaired += abs(len(good) - len(bad))
    return PairsFound(pairs, unpaired)
