"""Tiny random models of every family, built with transformers' own classes (two layers, width 64,
a 512-token BPE trained on Python's pydoc topics): seconds per model, nothing downloaded. Shared by
the families and Mixture-of-Experts tests (fixtures in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from pydoc_data.topics import topics

NOTE_TOPICS = ("class", "while", "for", "try", "with", "assert")


TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    initializer_range=0.2,  # spread-out logits: no near-ties for float rounding to flip
    tie_word_embeddings=False,
)
EXPERTS = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64)


def tiny_config(family: str, tokenizer):
    import transformers

    common = dict(
        TINY,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return {
        "llama": lambda: transformers.LlamaConfig(**common),
        "qwen2": lambda: transformers.Qwen2Config(**common),
        "qwen3": lambda: transformers.Qwen3Config(**common, head_dim=32),
        "gemma3": lambda: transformers.Gemma3TextConfig(
            **dict(common, tie_word_embeddings=True),
            head_dim=32,
            query_pre_attn_scalar=32,
            sliding_window=512,
        ),
        "phi3": lambda: transformers.Phi3Config(**common, sliding_window=None),
        "qwen2moe": lambda: transformers.Qwen2MoeConfig(
            **common, **EXPERTS, shared_expert_intermediate_size=128
        ),
        "qwen3moe": lambda: transformers.Qwen3MoeConfig(
            **common, **EXPERTS, head_dim=32, norm_topk_prob=True
        ),
    }[family]()


def write_small_tokenizer(folder: Path) -> Path:
    """A byte-level BPE of 512 tokens trained on the pydoc topics, saved as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(list(topics.values()), trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML,
    ).save_pretrained(folder)
    return folder


CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_folder(family: str, small_tokenizer: Path, root: Path) -> tuple[Path, object]:
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(small_tokenizer)
    config = tiny_config(family, tokenizer)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    # llama.cpp reads Phi-3 special tokens into any model whose name says Phi-3: this vocabulary has none.
    folder = root / f"tiny-{family.replace('phi3', 'mini')}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, config


def write_topic_notes(folder: Path) -> Path:
    """A notes folder of six pydoc topics, one Markdown file each."""
    for topic in NOTE_TOPICS:
        (folder / f"{topic}.md").write_text(f"# {topic}\n\n{topics[topic]}", encoding="utf-8")
    return folder
