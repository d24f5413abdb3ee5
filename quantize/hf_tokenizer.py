"""A Hugging Face folder's BPE tokenizer as GGUF metadata, with llama.cpp's pre-tokenizer found by trial.

llama.cpp picks its pre-tokenizer (how text is split before BPE) from the name in
`tokenizer.ggml.pre`. Rather than trust a table of hashes, Lantern writes the vocabulary with each
candidate name, lets llama.cpp tokenize a probe text and keeps the name whose tokens equal the Hugging
Face tokenizer's own.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import gguf

from quantize.errors import ConversionError
from quantize.native_output import captured_native_output

# llama.cpp pre-tokenizer names worth trying for byte-level BPE models, most likely first.
PRE_TOKENIZER_CANDIDATES = (
    "smollm",
    "llama-bpe",
    "qwen2",
    "gpt-4o",
    "gpt-2",
    "starcoder",
    "falcon",
    "default",
)

PROBE_TEXT = (
    "Hello World! It's 2026; we'll pay $1,234.56 for 3333333 items.\n\n"
    "  def f(x):\n\treturn x**2  # square\n"
    "Ünïcödé — naïve café, 日本語のテキスト, emoji 🙂🚀  \u00a0trailing   spaces\r\n"
    "URLs like https://example.org/a?b=c&d=e and e-mail a.b@c.de; I'VE DONE IT, you're sure?"
)


def add_hf_tokenizer(writer: gguf.GGUFWriter, folder: Path, pre: str, tokenizer=None) -> None:
    """Write the folder's BPE vocabulary, merges, special tokens and chat template into ``writer``;
    with the loaded HF ``tokenizer``, also whether it adds BOS/EOS by itself."""
    try:
        vocab = gguf.vocab.BpeVocab(folder)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        raise ConversionError(
            f"{folder} has no byte-level BPE tokenizer that Lantern can convert ({exc}); "
            "models with a byte-level BPE tokenizer.json are supported"
        ) from None
    tokens, types = [], []
    for text, _score, token_type in vocab.all_tokens():
        tokens.append(text)
        types.append(token_type)
    # Added tokens marked special (<|im_start|>...) are control tokens for llama.cpp: never split,
    # never printed as text.
    for added in json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens", []):
        if added["id"] < len(types):
            types[added["id"]] = (
                gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
            )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens))
    if tokenizer is not None:
        with_special = tokenizer.encode("a", add_special_tokens=True)
        plain = tokenizer.encode("a", add_special_tokens=False)
        special.add_special_token["bos"] = len(with_special) > len(plain) and with_special[0] != plain[0]
        special.add_special_token["eos"] = len(with_special) > len(plain) and with_special[-1] != plain[-1]
    special.add_to_gguf(writer, quiet=True)


def detect_pre_tokenizer(
    folder: Path, tokenizer, arch: str, write_hparams: Callable[[gguf.GGUFWriter], None]
) -> str:
    """The llama.cpp pre-tokenizer name under which llama.cpp tokenizes like the HF tokenizer."""
    import llama_cpp

    expected = tokenizer.encode(PROBE_TEXT, add_special_tokens=False)
    with tempfile.TemporaryDirectory(prefix="lantern-vocab-") as scratch:
        for pre in PRE_TOKENIZER_CANDIDATES:
            probe_file = Path(scratch) / f"{pre}.gguf"
            writer = gguf.GGUFWriter(probe_file, arch)
            write_hparams(writer)
            add_hf_tokenizer(writer, folder, pre, tokenizer)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            with captured_native_output():
                try:
                    vocab_only = llama_cpp.Llama(model_path=str(probe_file), vocab_only=True, verbose=False)
                except (ValueError, RuntimeError):
                    continue
            got = vocab_only.tokenize(PROBE_TEXT.encode("utf-8"), add_bos=False, special=False)
            vocab_only.close()
            if got == expected:
                return pre
    raise ConversionError(
        f"llama.cpp tokenizes differently from {folder}'s tokenizer under every pre-tokenizer tried "
        f"({', '.join(PRE_TOKENIZER_CANDIDATES)}); this tokenizer is not supported yet"
    )
