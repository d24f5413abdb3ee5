"""The terminal app, driven with Textual's Pilot on the real model: a person's session with it."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace

from textual import events
from textual.widgets import Input, OptionList, ProgressBar, Static

from app.assistant import Assistant
from tests.memory_fixtures import make_notes
from tests.tui_pilot import greedy, run_app, until
from tui.app import LanternApp
from tui.screens.chat import ChatScreen
from tui.screens.problem import ProblemScreen
from tui.screens.source_view import SourceViewScreen
from tui.widgets.message import AnswerMessage, UserMessage
from tui.widgets.prompt import PromptArea
from tui.widgets.sources import SourcesPanel
from tui.widgets.status_bar import StatusBar


def _assistant(max_tokens: int = 24) -> Assistant:
    return greedy(Assistant(), max_tokens)


def _chat(app: LanternApp) -> ChatScreen:
    assert isinstance(app.screen, ChatScreen), app.screen
    return app.screen


async def _ask(pilot, text: str) -> AnswerMessage:
    chat = _chat(pilot.app)
    await until(pilot, chat.model_ready.is_set)
    before = len(chat.query(AnswerMessage))
    prompt = chat.query_one(PromptArea)
    prompt.focus()
    prompt.insert(text)
    await pilot.press("enter")
    await until(pilot, lambda: len(chat.query(AnswerMessage)) > before and not chat.answering)
    return list(chat.query(AnswerMessage))[-1]


def _run(assistant: Assistant, scenario, size=(100, 30)):
    return run_app(LanternApp(assistant), scenario, size)


def test_a_question_streams_an_answer_that_the_cli_can_continue(home):
    assistant = _assistant()

    async def scenario(pilot):
        answer = await _ask(pilot, "What is the capital of France? Answer in one word.")
        status = pilot.app.screen.query_one(StatusBar)
        return answer.text, answer.first_piece_at, status.tokens_per_s, status.context_used

    text, first_piece_at, tokens_per_s, context_used = _run(assistant, scenario)
    assert "Paris" in text and first_piece_at is not None
    assert tokens_per_s > 0 and context_used > 0
    saved = Assistant().conversations.latest()  # as `lantern ask -c` would find it
    assert saved.messages[-1].content == text


def test_escape_stops_an_answer_mid_way_and_keeps_what_was_written(home):
    assistant = _assistant(max_tokens=400)

    async def scenario(pilot):
        chat = _chat(pilot.app)
        await until(pilot, chat.model_ready.is_set)
        chat.query_one(PromptArea).insert("Write a very long story about a dragon and a lighthouse.")
        await pilot.press("enter")
        await until(pilot, lambda: any(len(a.text) > 20 for a in chat.query(AnswerMessage)))
        await pilot.press("escape")
        await until(pilot, lambda: not chat.answering)
        answer = list(chat.query(AnswerMessage))[-1]
        footer = str(answer.query_one(".answer-footer", Static).content)
        return answer.text, footer

    text, footer = _run(assistant, scenario)
    assert footer.startswith("[stopped]")
    tokens = int(footer.split()[1])
    assert 0 < tokens < 400
    assert Assistant().conversations.latest().messages[-1].content == text


def test_switching_conversation_shows_it_and_continues_it(home):
    assistant = _assistant(max_tokens=8)
    store = assistant.conversations
    old = store.create(assistant.config.default_model, "", "Remember the word marmalade")
    store.add_exchange(old.id, "Remember the word marmalade", "I will remember marmalade.")
    newer = store.create(assistant.config.default_model, "", "Something else")
    store.add_exchange(newer.id, "Something else", "Sure.")

    async def scenario(pilot):
        chat = _chat(pilot.app)
        options = chat.query_one("#conversation-options", OptionList)
        assert [str(options.get_option_at_index(i).prompt) for i in range(2)] == [
            "Something else",
            "Remember the word marmalade",
        ]
        options.focus()
        options.highlighted = 1
        await pilot.press("enter")
        await until(pilot, lambda: chat.conversation is not None and chat.conversation.id == old.id)
        shown = [str(m.content) for m in chat.query(UserMessage)] + [
            a.text for a in chat.query(AnswerMessage)
        ]
        await _ask(pilot, "Which word?")
        return shown

    shown = _run(assistant, scenario)
    assert shown == ["Remember the word marmalade", "I will remember marmalade."]
    continued = Assistant().conversations.get(old.id)
    assert [m.content for m in continued.messages][2] == "Which word?"


async def _open_first_listed_conversation(pilot, chat) -> OptionList:
    """Pick the top conversation in the sidebar with Enter, as a user would; the list it was in."""
    options = chat.query_one("#conversation-options", OptionList)
    options.focus()
    options.highlighted = 0
    await pilot.press("enter")
    await until(pilot, lambda: chat.conversation is not None)
    return options


def test_ctrl_n_starts_a_new_chat_ctrl_b_hides_the_list_and_ctrl_f_searches_it(home):
    assistant = _assistant()
    store = assistant.conversations
    for prompt, answer in [
        ("Remember the word marmalade", "I will remember marmalade."),
        ("Plans for the garden", "Plant tomatoes."),
    ]:
        stored = store.create(assistant.config.default_model, "", prompt)
        store.add_exchange(stored.id, prompt, answer)

    async def scenario(pilot):
        chat = _chat(pilot.app)
        options = await _open_first_listed_conversation(pilot, chat)
        opened = [str(m.content) for m in chat.query(UserMessage)]
        await pilot.press("ctrl+n")  # from the message box, where opening a chat left the focus
        await pilot.pause()
        after_new = (chat.conversation, list(chat.query(UserMessage)), len(chat.query("#welcome")))

        sidebar = chat.query_one("#sidebar")
        await pilot.press("ctrl+b")
        hidden = not sidebar.display
        await pilot.press("ctrl+b")
        shown = sidebar.display
        await pilot.press("ctrl+b")
        await pilot.press("ctrl+f")
        search = chat.query_one("#conversation-search", Input)
        found_by_ctrl_f = sidebar.display and pilot.app.focused is search
        await pilot.press(*"marmalade")
        await pilot.pause()
        listed = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        return opened, after_new, hidden, shown, found_by_ctrl_f, search.value, listed

    opened, after_new, hidden, shown, found_by_ctrl_f, typed, listed = _run(assistant, scenario)
    assert opened == ["Plans for the garden"]
    assert after_new == (None, [], 1)  # an empty chat with its welcome line
    assert hidden and shown
    assert found_by_ctrl_f and typed == "marmalade"
    assert listed == ["Remember the word marmalade"]


def test_rename_search_and_delete_with_confirmation(home):
    assistant = _assistant()
    store = assistant.conversations
    first = store.create(assistant.config.default_model, "", "Plans for the garden")
    store.add_exchange(first.id, "Plans for the garden", "Plant tomatoes.")

    async def scenario(pilot):
        chat = _chat(pilot.app)
        options = await _open_first_listed_conversation(pilot, chat)
        await pilot.press("f2")
        rename = pilot.app.screen.query_one("#title", Input)
        rename.value = "Balcony garden"
        await pilot.press("enter")
        await until(pilot, lambda: str(options.get_option_at_index(0).prompt) == "Balcony garden")
        chat.query_one("#conversation-search", Input).value = "zzz-no-match"
        await until(pilot, lambda: options.get_option_at_index(0).disabled)
        chat.query_one("#conversation-search", Input).value = "tomatoes"  # found by message text
        await until(pilot, lambda: not options.get_option_at_index(0).disabled)
        await pilot.press("f8")
        await pilot.press("escape")  # cancel keeps it
        assert len(store.list()) == 1
        await pilot.press("f8")
        await pilot.click("#yes")
        await until(pilot, lambda: chat.conversation is None)

    _run(assistant, scenario)
    assert Assistant().conversations.list() == []


def test_memory_toggle_and_the_sources_of_an_answer(home, tmp_path):
    assistant = _assistant(max_tokens=16)
    assistant.memory.add([make_notes(tmp_path / "notes")])

    async def scenario(pilot):
        chat = _chat(pilot.app)
        sources = chat.query_one(SourcesPanel)
        await _ask(pilot, "Who services the boiler?")
        cited = [str(sources.get_option_at_index(i).prompt) for i in range(sources.option_count)]
        shown_with_memory = sources.display
        sources.focus()
        sources.highlighted = 0
        await pilot.press("enter")
        opened = isinstance(pilot.app.screen, SourceViewScreen)
        viewer_text = pilot.app.screen.query_one("#source-title", Static).content if opened else ""
        await pilot.press("escape")
        await pilot.press("f5")
        memory_off = not chat.query_one(StatusBar).memory_on
        await _ask(pilot, "Who services the boiler?")
        return cited, shown_with_memory, opened, str(viewer_text), memory_off, sources.display

    cited, shown_with_memory, opened, viewer_text, memory_off, shown_without = _run(assistant, scenario)
    assert shown_with_memory and cited[0] == "[1] home/scan.pdf › page 1"
    assert opened and "scan.pdf" in viewer_text
    assert memory_off and not shown_without


def test_adding_a_folder_runs_in_a_worker_and_the_progress_completes(home, tmp_path):
    assistant = _assistant()
    notes = make_notes(tmp_path / "notes")

    async def scenario(pilot):
        await pilot.press("f3")
        screen = pilot.app.screen
        screen.query_one("#memory-path", Input).value = str(notes)
        await pilot.press("enter")
        report = screen.query_one("#memory-report", Static)
        await until(pilot, lambda: str(report.content).startswith(("Done", "error")))
        bar = screen.query_one("#memory-progress", ProgressBar)
        return (
            str(report.content),
            bar.progress,
            bar.total,
            str(screen.query_one("#memory-roots", Static).content),
        )

    report, progress, total, roots = _run(assistant, scenario)
    assert report.startswith("Done: 6 added") and "3 skipped (unreadable)" in report
    assert progress == total and total > 0
    assert str(notes) in roots


def test_ratings_and_an_edited_answer_become_preference_pairs(home):
    assistant = _assistant(max_tokens=8)

    async def scenario(pilot):
        answer = await _ask(pilot, "Name a colour.")
        await pilot.press("f6")
        await pilot.press("f9")
        editor = pilot.app.screen.query_one("#edited")
        editor.text = "Blue."
        await pilot.press("ctrl+s")
        await pilot.pause()
        return answer.text

    original = _run(assistant, scenario)
    pairs = Assistant().conversations.preference_pairs()
    assert [(p.rating, p.chosen, p.rejected) for p in pairs] == [(1, original, None), (-1, "Blue.", original)]
    assert pairs[0].prompt[-1] == {"role": "user", "content": "Name a colour."}


def test_a_good_and_a_bad_rating_of_two_answers_to_one_question_make_a_pair(home):
    from quantize.twin.preferences import dpo_pairs

    assistant = _assistant(max_tokens=24)
    # Sampled, not greedy: the same question is answered twice, and the two answers should differ.
    sampled = replace(assistant.config.generation, temperature=1.0)
    assistant.config = replace(assistant.config, generation=sampled)
    question = "Invent a name for a small boat and say why."

    async def scenario(pilot):
        liked = await _ask(pilot, question)
        await pilot.press("f6")
        await pilot.press("ctrl+n")
        disliked = await _ask(pilot, question)
        await pilot.press("f7")
        await pilot.pause()
        footer = str(disliked.query_one(".answer-footer", Static).content)
        return liked.text, disliked.text, footer

    liked, disliked, footer = _run(assistant, scenario)
    assert footer.startswith("marked bad")
    found = dpo_pairs(Assistant().conversations.preference_pairs())
    assert found.unpaired == 0 and len(found.pairs) == 1
    pair = found.pairs[0]
    assert (pair.chosen, pair.rejected) == (liked, disliked)
    assert pair.prompt[-1] == {"role": "user", "content": question}


def test_empty_and_huge_messages_get_a_clear_answer_and_no_crash(home):
    assistant = _assistant()

    async def scenario(pilot):
        chat = _chat(pilot.app)
        await until(pilot, chat.model_ready.is_set)
        await pilot.press("enter")  # nothing typed
        nothing_sent = not list(chat.query(UserMessage))
        prompt = chat.query_one(PromptArea)
        prompt.post_message(events.Paste("lighthouse " * 10_000))  # a 110,000-character paste
        await until(pilot, lambda: len(prompt.text) > 100_000)
        await pilot.press("enter")
        await until(pilot, lambda: bool(list(chat.query(AnswerMessage))))
        await until(pilot, lambda: not chat.answering)
        answer = list(chat.query(AnswerMessage))[-1]
        footer = str(answer.query_one(".answer-footer", Static).content)
        second = await _ask(pilot, "Say hello.")  # still usable afterwards
        return nothing_sent, footer, second.text

    nothing_sent, footer, after = _run(assistant, scenario)
    assert nothing_sent
    assert footer.startswith("error: the prompt is") and "context window is 4096 tokens" in footer
    assert after


def test_a_missing_model_file_is_explained_in_the_chat(home, bundled_model, tmp_path):
    copy = tmp_path / "copy.gguf"
    shutil.copy(bundled_model, copy)
    assistant = _assistant()
    assistant.models.add(copy, "spare")
    (assistant.home.models_dir / "spare.gguf").unlink()
    assistant.config = replace(assistant.config, default_model="spare")

    async def scenario(pilot):
        chat = _chat(pilot.app)
        await until(pilot, lambda: chat.query_one(StatusBar).state == "model not loaded")

        answer = await _ask(pilot, "Are you there?")  # fails at once with the reason, never hangs
        footer = str(answer.query_one(".answer-footer", Static).content)
        return [str(w.content) for w in chat.query(".error").results(Static)], footer

    errors, footer = _run(assistant, scenario)
    assert any("the file of model 'spare' is missing" in e and "F4" in e for e in errors)
    assert footer.startswith("error: the file of model 'spare' is missing")


def test_a_damaged_conversation_store_shows_what_to_do(home):
    assistant = _assistant()
    assistant.home.conversations_db.write_bytes(b"this is not a database" * 100)

    async def scenario(pilot):
        screen = pilot.app.screen
        assert isinstance(screen, ProblemScreen)
        return str(screen.query_one("#problem-text", Static).content)

    text = _run(assistant, scenario)
    assert "is damaged" in text and "mv " in text


def test_picking_a_model_loads_it_in_a_worker_and_new_chats_use_it(home, bundled_model, tmp_path):
    copy = tmp_path / "twin.gguf"
    shutil.copy(bundled_model, copy)
    assistant = _assistant(max_tokens=4)
    assistant.models.add(copy, "twin")

    async def scenario(pilot):
        chat = _chat(pilot.app)
        await until(pilot, chat.model_ready.is_set)
        await pilot.press("f4")
        options = pilot.app.screen.query_one("#model-options", OptionList)
        names = [options.get_option_at_index(i).id for i in range(options.option_count)]
        options.highlighted = names.index("twin")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen) and chat.model == "twin")
        await _ask(pilot, "Hello")
        return names, chat.query_one(StatusBar).model

    names, shown = _run(assistant, scenario)
    assert names == ["smollm2-135m-instruct", "twin"] and shown == "twin"
    assert Assistant().conversations.latest().model == "twin"


def test_palette_commands_run_the_chat_actions(home):
    assistant = _assistant()

    async def scenario(pilot):
        app = pilot.app
        chat = _chat(app)
        commands = {c.title: c.callback for c in app.get_system_commands(chat)}
        assert {"New conversation", "Toggle memory", "Pick model", "Keys", "Edit answer"} <= set(commands)
        await commands["Toggle memory"]()
        await pilot.pause()
        return chat.query_one(StatusBar).memory_on

    assert _run(assistant, scenario) is False


def test_a_gguf_file_given_at_launch_is_chatted_with_and_a_broken_one_is_named(home, bundled_model, tmp_path):
    def launch(model: str):
        async def scenario(pilot):
            chat = _chat(pilot.app)
            await until(pilot, chat.model_ready.is_set)
            errors = [str(s.content) for s in chat.query(".error")]
            return chat.model, chat.query_one(StatusBar).model, errors

        async def main():
            async with LanternApp(assistant, model=model).run_test(size=(100, 30)) as pilot:
                return await scenario(pilot)

        assistant = Assistant()
        try:
            return asyncio.run(main())
        finally:
            assistant.close()

    model, shown, errors = launch(str(bundled_model))
    assert model == shown == str(bundled_model) and errors == []

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(bundled_model.read_bytes()[:4096])
    _, _, errors = launch(str(broken))
    assert len(errors) == 1 and f"{broken} is truncated" in errors[0]
