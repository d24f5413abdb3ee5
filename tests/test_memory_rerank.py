"""The reranking stage: the first search's best passages read again more closely, so a passage that
only shares the question's words no longer outranks the one that answers it; set in the config."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.config import DEFAULT_CONFIG_TEXT, MemoryConfig, parse_config
from app.errors import LanternError
from app.memory import Memory
from rag.rerank import MaxSimReranker
from rag.store import contextual_text

OTHER_NOTES = {
    "garden.md": "# Garden\n\nTomatoes on the balcony need six hours of sun and a deep pot.",
    "boiler.md": "# Boiler\n\nThe boiler service is booked with Mr Okafor for the third of March.",
}
# A question, the note that shares its words but not its meaning, and the note that answers it.
WORD_TRAPS = [
    (
        "when is the rent due",
        (
            "tent.md",
            "# Camping\n\nThe tent rent at the campsite is due when we arrive; "
            "we rent the tent for three nights.",
        ),
        (
            "flat.md",
            "# Flat\n\nThe landlord expects the monthly payment for the apartment "
            "on the first day of each month.",
        ),
    ),
    (
        "what does my dog eat",
        (
            "hotdogs.md",
            "# Street food\n\nWe eat a hot dog at the stand by the station; "
            "the stand sells the best hot dogs to eat.",
        ),
        (
            "rex.md",
            "# Rex\n\nOur dog Rex gets a cup of kibble twice a day "
            "and a raw carrot as a treat after his walk.",
        ),
    ),
]


def _memory(tmp_path, embedder, notes: dict[str, str], config: MemoryConfig) -> Memory:
    folder = tmp_path / "notes"
    folder.mkdir()
    for name, text in notes.items():
        (folder / name).write_text(text)
    memory = Memory(tmp_path / "memory", config, None, embedder)
    memory.add([folder])
    return memory


@pytest.mark.parametrize(("question", "trap", "answer"), WORD_TRAPS, ids=["rent", "dog"])
def test_the_judge_puts_the_note_that_answers_above_the_one_that_only_shares_words(
    tmp_path, embedder, bundled_model, question, trap, answer
):
    memory = _memory(tmp_path, embedder, {**dict([trap, answer]), **OTHER_NOTES}, MemoryConfig())
    first_stage = [hit.source for hit in memory.search(question, k=2)]
    assert first_stage == [trap[0], answer[0]]  # the shared words win the first search

    memory.config = replace(memory.config, rerank="judge", rerank_depth=4)
    assert memory.search(question, k=1)[0].source == answer[0]


def test_maxsim_reorders_the_first_stage_top_depth_by_late_interaction(tmp_path, embedder):
    notes = {**dict(t for case in WORD_TRAPS for t in case[1:]), **OTHER_NOTES}
    config = MemoryConfig(rerank="maxsim", rerank_depth=3, rerank_weight=1.0)
    memory = _memory(tmp_path, embedder, notes, config)
    question = "what does my dog eat"
    first = Memory(memory.directory, MemoryConfig(), None, embedder).search(question, k=6)

    store = memory.store
    texts = []
    for hit in first[:3]:
        chunk = store.chunk(hit.chunk_id)
        texts.append(contextual_text(store.files[chunk.path].relative, chunk.headings, chunk.text))
    by_maxsim = [first[i].source for i in (-MaxSimReranker(embedder).scores(question, texts)).argsort()]
    reranked = [hit.source for hit in memory.search(question, k=6)]
    assert reranked[:3] == by_maxsim and reranked[3:] == [hit.source for hit in first[3:]]
    assert [h.score for h in memory.search(question, k=6)] == sorted(
        (h.score for h in memory.search(question, k=6)), reverse=True
    )


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
