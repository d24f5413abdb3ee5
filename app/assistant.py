"""The assistant the front ends talk to: config, model store, engines and saved conversations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from app.chat_engine import ChatEngine
from app.chat_template import ChatMessage, check_utf8
from app.config import Config, load_config
from app.conversations import Conversation, ConversationStore
from app.engine import ChatResult, ChatStream, Engine, GenerationSettings
from app.errors import LanternError
from app.home import DataHome, InUse
from app.home_key import HomeKey, secret_from_environment
from app.kv_states import StateCache, context_fingerprint
from app.memory import Memory, citation_record
from app.model_store import ModelStore, looks_like_path
from app.query_expansion import hypothetical_passage
from app.remote_engine import RemoteEngine
from app.twins import TwinStore
from rag.retrieval import RetrievalHit


@dataclass
class Turn:
    """One question being answered; iterating streams the answer, and the end saves it."""

    store: ConversationStore
    conversation: Conversation | None  # None: a new conversation, created when saved
    model: str
    system_prompt: str
    prompt: str  # what the user typed; saved as is, without the memory passages
    stream: ChatStream
    citations: list[RetrievalHit] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self.stream
        finally:
            self._save()

    @property
    def result(self) -> ChatResult | None:
        return self.stream.result

    def _save(self) -> None:
        result = self.stream.result
        if result is None:
            return
        self.conversation, _ = self.store.record_exchange(
            self.conversation,
            self.model,
            self.system_prompt,
            self.prompt,
            result.text,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            citations=[citation_record(hit) for hit in self.citations],
            finish=result.finish_reason,
        )


class Assistant:
    def __init__(
        self,
        home_root: Path | None = None,
        ask_secret: Callable[[str], str] | None = None,
        key_file: Path | None = None,
    ):
        """``ask_secret`` prompts for the passphrase of an encrypted home when no key is in the
        environment; ``key_file`` (``--key-file``) comes before both."""
        self.home = DataHome.open(home_root)
        self.in_use = InUse(self.home)
        self.config: Config = load_config(self.home.config_file)
        self.models = ModelStore(self.home)
        self.models.ensure_default_registered()
        self.twins = TwinStore(self.home)
        self._conversations: ConversationStore | None = None
        self._engines: dict[str, ChatEngine] = {}
        self.key = HomeKey(
            self.home.root, secret_from_environment(str(key_file or self.config.memory.key_file), ask_secret)
        )
        self.key.on_pending = self._finish_sealing
        self.memory = Memory(self.home.root / "memory", self.config.memory, self.key)

    def is_encrypted(self) -> bool:
        """The data home, or (in homes from before the whole home was sealed) its memory."""
        return self.key.is_encrypted() or self.memory.is_encrypted()

    def unlock(self) -> None:
        """Ask for the passphrase now, if the home is encrypted (before a full-screen app starts)."""
        if self.key.is_encrypted():
            self.key.data_key()
        elif self.memory.is_encrypted():
            self.memory.has_notes()

    def unlock_with(self, secret: bytes) -> None:
        """Unlock with a secret typed into a front end (the TUI); raises WrongKeyError, a
        LanternError, when it does not fit, and the secret is then forgotten."""
        self.key.unlock_with(secret)
        if not self.key.is_encrypted() and self.memory.is_encrypted():
            try:  # a home from before the whole home was sealed: opening its memory is the check
                _ = self.memory.store
            except LanternError:
                self.key.forget()
                raise

    def _finish_sealing(self, key: HomeKey) -> None:
        from app.sealing import finish_sealing

        with self.in_use.alone("finish the interrupted 'lantern init --encrypt' (any command does)"):
            finish_sealing(self, key.data_key())

    @property
    def conversations(self) -> ConversationStore:
        if self._conversations is None:
            self._conversations = ConversationStore(
                self.home.private_file(self.home.conversations_db), self.key.database_key()
            )
        return self._conversations

    def engine(self, model: str | None = None) -> ChatEngine:
        """The loaded engine for ``model`` (default from config), loading it on first use. A twin's
        name gives its base model with the twin's adapter applied; a remote model's name, a
        ``RemoteEngine`` talking to its server."""
        name = self.model_key(model)
        if name not in self._engines:
            remote = self.models.remote(name)
            if remote is not None:
                # No KV state cache: the server keeps (or not) its own.
                engine = RemoteEngine(remote, self.config.remote, self.config.runtime.context_length)
                self._engines[name] = engine
                return engine
            twin = None
            if self._is_twin(name):
                twin = self.twins.get(name)
                if not twin.trained:
                    raise LanternError(
                        f"twin {name!r} has no adapter yet; finish it with 'lantern twin build --resume'"
                    )
                base = self.models.remote(twin.base_model)
                if base is not None:
                    raise LanternError(
                        f"twin {name!r} needs a local GGUF base; {twin.base_model!r} is remote ({base.url})"
                    )
            entry = self.models.resolve(twin.base_model if twin else name)
            runtime = self.config.runtime
            load = partial(
                Engine,
                entry.path,
                context_length=runtime.context_length,
                threads=runtime.threads,
                batch_size=runtime.batch_size,
            )
            if twin is None:
                engine = load()
            else:
                # A sealed adapter is opened into a private temporary file only while llama.cpp
                # loads it (it reads the adapter whole); the engine then names the sealed one.
                with self.twins.adapter_file(name, self.key.cipher()) as adapter:
                    engine = load(lora_path=adapter, lora_scale=twin.scale)
                engine.lora_path = self.twins.adapter_path(name)
            engine.state_cache = self.state_cache(engine, streams=1)
            self._engines[name] = engine
        return self._engines[name]

    def state_cache(self, engine: Engine, streams: int) -> StateCache | None:
        """Where conversations' KV states are kept for ``engine`` in a context of ``streams``
        KV streams: memory, and the data home unless it is encrypted (a state is derived from
        the chat, and so from the notes in it)."""
        runtime = self.config.runtime
        spill = None
        if runtime.state_disk_mb > 0 and not self.is_encrypted():
            fingerprint = context_fingerprint(engine.model_path, engine.lora_path, engine.lora_scale, streams)
            spill = self.home.kv_states_dir / fingerprint
        if runtime.state_cache_mb <= 0 and spill is None:
            return None
        return StateCache(runtime.state_cache_mb * 2**20, spill, runtime.state_disk_mb * 2**20)

    def model_key(self, model: str | None) -> str:
        """The name a model is loaded and saved under: a store or twin name as given, a file's
        absolute path (so a conversation continues from any folder)."""
        name = model or self.config.default_model
        if looks_like_path(name) and name not in {e.name for e in self.models.list()}:
            return str(Path(name).expanduser().resolve())
        return name

    def _is_twin(self, name: str) -> bool:
        try:
            return self.twins.exists(name) and name not in {e.name for e in self.models.list()}
        except LanternError:  # not a valid twin name: a path, or a store name's own error later
            return False

    def settings(
        self,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        speculative: str | None = None,
    ) -> GenerationSettings:
        """Generation settings from the config, with any given overrides."""
        defaults = self.config.generation
        settings = GenerationSettings(
            max_tokens=max_tokens if max_tokens is not None else defaults.max_tokens,
            temperature=temperature if temperature is not None else defaults.temperature,
            top_p=top_p if top_p is not None else defaults.top_p,
            seed=seed if seed is not None else defaults.seed,
            speculative=speculative or self.config.runtime.speculative,
            repetition_guard=defaults.repetition_guard,
            dry_multiplier=defaults.dry_multiplier,
            repeat_penalty=defaults.repeat_penalty,
        )
        if settings.max_tokens < 1:
            raise LanternError("max tokens must be at least 1")
        if not 0.0 <= settings.temperature <= 5.0:
            raise LanternError("temperature must be between 0 and 5")
        if not 0.0 < settings.top_p <= 1.0:
            raise LanternError("top-p must be greater than 0 and at most 1")
        return settings

    def ask(
        self,
        prompt: str,
        *,
        conversation: Conversation | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
        settings: GenerationSettings | None = None,
        use_memory: bool = True,
    ) -> Turn:
        """Start answering ``prompt``, continuing ``conversation`` if one is given."""
        check_utf8(prompt, "prompt")
        if not prompt.strip():
            raise LanternError("the prompt is empty; type a question")
        if conversation is not None:
            model = self.model_key(model or conversation.model)
            messages = conversation.chat_messages()
            system = conversation.system_prompt
        else:
            model = self.model_key(model)
            system = self.config.system_prompt if system_prompt is None else system_prompt
            check_utf8(system, "system prompt")
            messages = [ChatMessage("system", system)] if system else []
        engine = self.engine(model)
        context = None
        if use_memory and self.config.memory.enabled and self.memory.has_notes():
            expand = partial(hypothetical_passage, engine)
            context = self.memory.context_for(prompt, engine.count_tokens, expand)
        content = context.prompt if context else prompt
        stream = engine.stream_chat([*messages, ChatMessage("user", content)], settings or self.settings())
        citations = context.hits if context else []
        return Turn(self.conversations, conversation, model, system, prompt, stream, citations)

    def unload(self, model: str) -> None:
        """Free a loaded engine (the server keeps only a few models loaded at once)."""
        engine = self._engines.pop(self.model_key(model), None)
        if engine is not None:
            engine.close()

    def close_conversations(self) -> None:
        if self._conversations is not None:
            self._conversations.close()
            self._conversations = None

    def close(self) -> None:
        self.close_conversations()
        self.in_use.release()
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
