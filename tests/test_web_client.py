"""The web client as a phone user meets it, in a real headless Chromium against a real `lantern
serve` with the real model: conversations shared with the CLI, answers in Markdown that stay text,
sources, notes, feedback for the twin, a twin picked, Stop, the tunnel going down and coming back,
pairing. Answers are kept short by the data home's config (generation.max_tokens), not the client."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from pydoc_data.topics import topics

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from app.errors import LanternError
from tests.api_server import start_server
from tests.memory_fixtures import make_notes
from tests.web_client_fixtures import (
    CHROMIUM,
    DESKTOP,
    PHONE,
    SMALL_PHONE,
    Lantern,
    ask,
    eventually,
    lantern_cli,
    launch,
    open_app,
    open_conversation,
    screenshot,
    stored_conversation,
    stored_token,
    wait_for_answer,
)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by 'make test'")

STATIC = Path(__file__).parents[1] / "android_client_api" / "static"

MARKDOWN_ANSWER = """Here is the plan for the beds:

| Day | Task |
|-----|------|
| Mon | Dig the **north** bed |
| Tue | Sow beans |

```python
print("sow the beans")
```

1. **Dig** first
2. *Sow* after rain

Read [the seed guide](https://example.org/beans) before you start."""

HOSTILE = (
    'Look: <img src=x onerror="window.__pwned=1;alert(1)"> and <script>window.__pwned=2</script> '
    'and [tap me](javascript:window.__pwned=3) and <a href="javascript:alert(4)">this</a>'
)


@pytest.fixture(scope="module")
def web_home(tmp_path_factory):
    """A data home for the module, answers capped at a few tokens so each one takes a moment."""
    root = tmp_path_factory.mktemp("web") / "lantern-home"
    root.mkdir()
    (root / "config.toml").write_text("[generation]\nmax_tokens = 24\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LANTERN_HOME", str(root))
        yield root


@pytest.fixture(scope="module")
def lantern(web_home, tmp_path_factory):
    server = start_server()
    server.service.assistant.memory.add([make_notes(tmp_path_factory.mktemp("notes") / "notes")])
    shared = Lantern(server, server.service.devices.pair("web-phone"))
    yield shared
    shared.server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def app(browser, lantern):
    """Open the app paired as the module's phone (or with another device's ``token``), or on the
    pairing screen with ``paired=False``; the browser contexts close after the test."""
    pages = []

    def open_(size=PHONE, scheme="light", token: str | None = None, paired: bool = True):
        token = (token or lantern.phone_token) if paired else None
        page = open_app(browser, lantern.server.url, token, size, scheme)
        pages.append(page)
        return page

    yield open_
    for page in pages:
        page.context.close()


@pytest.fixture(scope="module")
def twin(lantern, web_home, tmp_path_factory) -> str:
    """A twin built by the real `lantern twin build` with the smallest settings that train."""
    notes = tmp_path_factory.mktemp("twin-notes")
    for topic in ["assert", "for", "while", "with", "try", "import"]:
        (notes / f"{topic}.md").write_text(f"# {topic}\n\n{topics[topic]}", encoding="utf-8")
    smallest = ["--steps", "1", "--train-layers", "1", "--rank", "2", "--seq-len", "64", "--batch-size", "1"]
    built = lantern_cli(web_home, "twin", "build", str(notes), *smallest, "--name", "penpal")
    assert built.returncode == 0, built.stderr
    return "penpal"


@pytest.fixture
def long_answers(lantern):
    """Answers long enough to stop half way (the home's config caps them at 24 tokens)."""
    assistant = lantern.server.service.assistant
    short = assistant.config
    assistant.config = replace(short, generation=replace(short.generation, max_tokens=400))
    yield
    assistant.config = short


def _api(lantern: Lantern, path: str) -> dict:
    headers = {"Authorization": f"Bearer {lantern.phone_token}"}
    return httpx.get(lantern.server.url + path, headers=headers, timeout=30).raise_for_status().json()


# ---- conversations ----


def test_a_chat_started_with_lantern_ask_is_listed_first_and_continues_on_the_phone(lantern, app, web_home):
    started = lantern_cli(web_home, "ask", "Name a colour.", "--no-memory", "--max-tokens", "8")
    assert started.returncode == 0, started.stderr
    from_cli = lantern.store.latest()

    page = app()
    page.click("#menu")
    newest = page.locator("#conv-list li").first
    assert newest.locator(".conv-title").inner_text() == from_cli.title == "Name a colour."
    newest.locator("button.open").click()
    page.wait_for_selector(".msg.user .bubble:text-is('Name a colour.')")
    answer = ask(page, "And another one?")

    continued = lantern.store.get(from_cli.id)
    assert [m.content for m in continued.messages if m.role == "user"] == [
        "Name a colour.",
        "And another one?",
    ]
    assert answer.strip() and len(continued.messages) == 4

    # The fresh answer takes a thumbs-down like any stored one: it reaches the twin's feedback.
    down = page.locator(".msg.assistant").last.get_by_role("button", name="Bad answer")
    down.click()
    page.wait_for_selector(".msg.assistant:last-of-type [aria-label='Bad answer'][aria-pressed='true']")
    pair = lantern.store.preference_pairs()[-1]
    assert (pair.conversation_id, pair.message_id) == (from_cli.id, continued.messages[-1].id)
    assert pair.rating == -1 and pair.rejected == continued.messages[-1].content


def test_an_answer_a_remote_engine_cut_off_opens_marked_as_partial(lantern, app):
    """Stored as `serve` stores an answer whose remote engine broke off (tests/test_serve_remote.py
    produces that cut with its fake engine); here only how the phone shows it is under test."""
    cut, _ = lantern.store.record_exchange(
        None, "far", "", "Who mended the canal boat?", "The canal boat was mended by", finish="cut"
    )
    page = app()
    page.click("#menu")
    page.locator("#conv-list li").first.locator("button.open").click()
    answer = page.locator(".msg.assistant").last
    answer.locator(".status:text('partial')").wait_for()
    assert "The engine broke off" in answer.locator(".status").inner_text()
    assert "was mended by" in answer.locator(".md").inner_text()
    assert lantern.store.get(cut.id).messages[-1].is_cut


def test_a_conversation_is_found_by_its_text_renamed_and_deleted_only_after_confirming(lantern, app):
    conversation_id = stored_conversation(
        lantern, "Plans for the allotment", [("What do I plant in May?", "Beans and courgettes.")]
    )
    page = app(size=DESKTOP)
    page.fill("#conv-search", "courgettes")  # a word of the answer, not of the title
    expect(page.locator("#conv-list li")).to_have_count(1)
    item = page.locator("#conv-list li").first
    assert item.locator(".conv-title").inner_text() == "Plans for the allotment"

    item.get_by_role("button", name="Rename Plans for the allotment").click()
    page.fill("#editor-line", "Allotment in spring")
    page.click("#editor-ok")
    page.wait_for_selector("#conv-list .conv-title:text-is('Allotment in spring')")
    assert lantern.store.get(conversation_id).title == "Allotment in spring"

    delete = page.locator("#conv-list li").first.get_by_role("button", name="Delete Allotment in spring")
    delete.click()
    page.click("#confirm button[value='cancel']")
    assert lantern.store.get(conversation_id).title == "Allotment in spring"  # cancelled: still there
    delete.click()
    page.click("#confirm-ok")
    page.wait_for_selector("#conv-empty:not([hidden])")
    with pytest.raises(LanternError):
        lantern.store.get(conversation_id)


# ---- answers ----


def test_a_markdown_answer_shows_its_table_list_link_and_code_with_a_copy_button(lantern, app):
    stored_conversation(lantern, "Garden beds", [("Plan my week in the garden.", MARKDOWN_ANSWER)])
    page = app()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lantern.server.url)
    open_conversation(page, "Garden beds")
    answer = page.locator(".msg.assistant").last

    assert answer.locator("table th").all_inner_texts() == ["Day", "Task"]
    assert answer.locator("table td").all_inner_texts() == ["Mon", "Dig the north bed", "Tue", "Sow beans"]
    assert answer.locator("table strong").inner_text() == "north"
    assert answer.locator("ol li").all_inner_texts() == ["Dig first", "Sow after rain"]
    link = answer.locator("a")
    assert link.inner_text() == "the seed guide"
    assert link.get_attribute("href") == "https://example.org/beans"
    assert link.get_attribute("rel") == "noopener noreferrer"
    assert answer.locator("pre code").inner_text() == 'print("sow the beans")'

    answer.get_by_role("button", name="Copy python").click()
    page.wait_for_selector(".copy-code:text-is('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == 'print("sow the beans")'


def test_html_and_script_in_an_answer_or_a_note_show_as_text_and_never_run(lantern, app):
    stored_conversation(lantern, "Odd answer", [("Show me some HTML.", HOSTILE)])
    lantern.memory.add_note("Ferry timetable", "Zanzibar ferry leaves at nine. " + HOSTILE)
    page = app()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    open_conversation(page, "Odd answer")
    shown = page.locator(".msg.assistant").last.locator(".md")
    text = shown.inner_text()
    assert '<img src=x onerror="window.__pwned=1;alert(1)">' in text
    assert "<script>window.__pwned=2</script>" in text
    assert "tap me (javascript:window.__pwned=3)" in text  # a javascript: link stays text
    assert shown.locator("img, script, a").count() == 0

    page.click("#open-notes")
    page.fill("#note-query", "Zanzibar ferry")
    page.click("#note-search button")
    hit = page.locator("#note-hits button", has_text="Zanzibar").first
    assert "<script>" in hit.inner_text()
    hit.click()
    assert "<img src=x onerror=" in page.locator("#passage-text").inner_text()
    assert page.locator("#notes img, #passage img, #passage script, #passage a").count() == 0

    assert page.evaluate("window.__pwned") is None
    assert dialogs == []


def test_regenerate_and_edit_and_resend_replace_the_last_exchange(lantern, app):
    page = app()
    ask(page, "Name a fruit.")
    conversation_id = page.evaluate("localStorage.getItem('lantern-conversation')")
    assert [m.content for m in lantern.store.get(conversation_id).messages][0] == "Name a fruit."

    page.locator(".msg.assistant").last.get_by_role("button", name="Regenerate").click()
    regenerated = wait_for_answer(page)
    stored = lantern.store.get(conversation_id).messages
    assert [m.role for m in stored] == ["user", "assistant"]  # replaced, not appended
    assert regenerated.strip() and page.locator(".msg.assistant").count() == 1

    page.locator(".msg.user").last.get_by_role("button", name="Edit and resend").click()
    page.fill("#editor-text", "Name a vegetable.")
    page.click("#editor-ok")
    page.wait_for_selector(".msg.user .bubble:text-is('Name a vegetable.')")  # then it is being answered
    wait_for_answer(page)
    stored = lantern.store.get(conversation_id).messages
    assert [(m.role, m.content) for m in stored][0] == ("user", "Name a vegetable.") and len(stored) == 2
    assert page.locator(".msg.user .bubble").all_inner_texts() == ["Name a vegetable."]
    assert page.locator(".msg.assistant").count() == 1


def test_stop_ends_an_answer_mid_stream_and_keeps_what_was_written(lantern, app, long_answers):
    page = app()
    page.fill("#prompt", "Write a long story about a lighthouse keeper, a storm and a lost ship.")
    page.click("#send")
    page.wait_for_selector(".msg.assistant.streaming .md:not(:empty)")  # the first words are on screen
    page.click("#stop")

    answer = page.locator(".msg.assistant").last
    page.wait_for_selector(".msg.assistant .status:text-is('Stopped.')")
    assert page.is_visible("#send") and not page.is_visible("#stop")
    assert answer.locator(".md").inner_text().strip()
    assert eventually(lambda: lantern.server.service.scheduler.busy_slots == 0)  # the slot is freed

    # The first chunk named the conversation: what was written is kept there, and the chat goes on in it.
    conversation_id = page.evaluate("localStorage.getItem('lantern-conversation')")
    assert conversation_id
    assert eventually(
        lambda: [c.id for c, _ in lantern.store.search("lighthouse keeper")] == [conversation_id]
    )
    assert lantern.store.get(conversation_id).messages[1].content.strip()


# ---- notes ----


def test_a_source_under_an_answer_opens_the_passage_it_came_from(lantern, app):
    page = app()
    assert page.is_checked("#use-memory")
    ask(page, "Who services the boiler?")
    source = page.locator(".msg.assistant").last.locator(".sources button", has_text="scan.pdf").first
    screenshot(page, "sources-phone-light")
    source.click()
    screenshot(page, "passage-phone-light")
    assert page.locator("#passage-source").inner_text() == "home/scan.pdf"
    assert page.locator("#passage-heading").inner_text() == "page 1"
    assert "Mr Okafor" in page.locator("#passage-text").inner_text()


def test_a_quick_note_written_on_the_phone_is_found_by_search(lantern, app):
    page = app()
    page.click("#open-notes")
    page.fill("#note-title", "Bike lock")
    page.fill("#note-text", "The code of the blue bike lock is 4711.")
    page.click("#note-add button[type='submit']")
    page.wait_for_selector("#notes-status:has-text('Saved')")

    page.fill("#note-query", "blue bike lock code")
    page.click("#note-search button")
    hit = page.locator("#note-hits button").first
    assert "notes/Bike lock.md" in hit.inner_text() and "4711" in hit.inner_text()
    assert any("4711" in h.text for h in lantern.memory.search("bike lock code", 3))


def test_a_chat_is_remembered_as_a_note(lantern, app):
    stored_conversation(lantern, "Parking", [("Where did I park?", "Level 3, bay 42, next to the lifts.")])
    page = app()
    open_conversation(page, "Parking")
    page.click("#open-notes")
    page.click("#remember-chat")
    page.wait_for_selector("#notes-status:has-text('in your notes')")
    hits = lantern.memory.search("bay 42 next to the lifts", 3)
    assert any("Level 3, bay 42" in h.text and "Where did I park?" in h.text for h in hits)


def test_memory_off_answers_without_sources(lantern, app):
    page = app()
    page.uncheck("#use-memory")
    page.fill("#prompt", "Who services the boiler?")
    page.press("#prompt", "Control+Enter")  # sent from the keyboard
    assert wait_for_answer(page).strip()
    assert page.locator(".msg.assistant").last.locator(".sources button").count() == 0
    page.reload()
    assert not page.is_checked("#use-memory")  # the choice is remembered


# ---- feedback and twins ----


def test_thumbs_up_and_an_edited_answer_reach_the_twins_feedback(lantern, app):
    conversation_id = stored_conversation(
        lantern, "Green tea", [("How long do I steep green tea?", "Ten minutes in boiling water.")]
    )
    page = app()
    open_conversation(page, "Green tea")
    answer = page.locator(".msg.assistant").last
    answer.get_by_role("button", name="Good answer").click()
    page.wait_for_selector(".msg.assistant [aria-label='Good answer'][aria-pressed='true']")

    answer.get_by_role("button", name="Edit answer").click()
    page.fill("#editor-text", "Two to three minutes at 80 °C.")
    page.click("#editor-ok")
    page.wait_for_selector(".msg.assistant .status:has-text('better answer')")

    pairs = [p for p in lantern.store.preference_pairs() if p.conversation_id == conversation_id]
    assert [(p.rating, p.chosen, p.rejected) for p in pairs] == [
        (1, "Ten minutes in boiling water.", None),
        (-1, "Two to three minutes at 80 °C.", "Ten minutes in boiling water."),
    ]


def test_a_twin_picked_for_a_chat_answers_and_is_named_on_its_answer(lantern, app, twin):
    page = app()
    assert f"{twin} · twin" in page.locator("#model option").all_inner_texts()
    page.select_option("#model", twin)
    answer = ask(page, "What does assert do?")
    assert answer.strip()
    assert page.locator(".msg.assistant").last.locator(".model").inner_text() == twin

    conversation_id = page.evaluate("localStorage.getItem('lantern-conversation')")
    stored = _api(lantern, f"/v1/lantern/conversations/{conversation_id}")
    assert stored["model"] == twin and stored["messages"][-1]["model"] == twin


# ---- connection and pairing ----


def test_with_the_server_down_the_app_opens_keeps_the_message_and_recovers_when_it_is_back(lantern, app):
    page = app()
    assert eventually(lambda: page.evaluate("navigator.serviceWorker.controller !== null"))  # shell cached
    port = int(lantern.server.url.rsplit(":", 1)[1])
    lantern.server.stop()
    try:
        page.reload()  # the phone opens the app with the tunnel down
        page.wait_for_selector("#banner:not([hidden])")
        banner = page.inner_text("#banner")
        page.fill("#prompt", "Remind me to water the tomatoes.")
        page.click("#send")
        screenshot(page, "offline-phone-light")
        kept = page.input_value("#prompt"), page.evaluate("localStorage.getItem('lantern-draft')")
        sent = page.locator(".msg.user").count()
    finally:
        lantern.server = start_server(port=port)
    assert "Lantern is not reachable — is the tunnel up?" in banner
    assert kept == ("Remind me to water the tomatoes.",) * 2 and sent == 0

    page.wait_for_selector("#banner[hidden]", state="attached", timeout=90_000)
    assert page.input_value("#prompt") == "Remind me to water the tomatoes."
    answer = ask(page, page.input_value("#prompt"))  # and it goes through, without a reload
    assert answer.strip()
    assert page.evaluate("localStorage.getItem('lantern-draft')") is None


def test_a_revoked_device_sees_the_pairing_screen_and_pairs_again(lantern, app):
    server = lantern.server
    page = app(token=server.token)
    server.service.devices.revoke("test-phone")
    page.reload()
    page.wait_for_selector("#pairing:not([hidden])")
    assert "revoked" in page.inner_text("#pairing-reason")
    assert not re.search(r"bad_token|authentication_error|\{", page.inner_text("#pairing"))
    assert stored_token(page) is None

    server.token = server.service.devices.pair("test-phone")
    page.fill("#token", server.token)
    page.click("#token-form button")
    page.wait_for_selector("#pairing", state="hidden")
    page.wait_for_selector("#conv-list li", state="attached")
    assert stored_token(page) == server.token


def test_forgetting_this_device_clears_its_token_and_shows_pairing(lantern, app):
    page = app(size=DESKTOP)
    assert "token" not in page.url  # the QR code's link leaves no token in the address bar
    assert stored_token(page) == lantern.phone_token
    page.click("#forget")
    page.click("#confirm-ok")
    page.wait_for_selector("#pairing:not([hidden])")
    assert stored_token(page) is None


# ---- a phone app, not a page ----


def test_the_main_screens_fit_a_phone_and_a_desktop_in_light_and_dark(lantern, app):
    stored_conversation(lantern, "Garden week", [("Plan my week in the garden.", MARKDOWN_ANSWER)])
    sizes = {"phone": PHONE, "desktop": DESKTOP}
    for scheme in ("light", "dark"):
        for name, size in sizes.items():
            page = app(size=size, scheme=scheme)
            assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") == (scheme == "dark")
            # A desktop shows the conversations beside the chat; a phone keeps them in a drawer.
            assert page.is_visible("#conv-list") == (name == "desktop")
            open_conversation(page, "Garden week")
            screenshot(page, f"chat-{name}-{scheme}")
            if name == "phone":
                page.click("#menu")
                page.wait_for_selector("#drawer #conv-search:visible")
            screenshot(page, f"conversations-{name}-{scheme}")
            page.keyboard.press("Escape")
            page.click("#open-notes")
            page.fill("#note-query", "boiler")
            page.click("#note-search button")
            page.wait_for_selector("#note-hits li")
            screenshot(page, f"notes-{name}-{scheme}")
            screenshot(app(size=size, scheme=scheme, paired=False), f"pairing-{name}-{scheme}")

    small = app(size=SMALL_PHONE)
    open_conversation(small, "Garden week")
    screenshot(small, "chat-320px-light")
    assert small.evaluate("document.documentElement.scrollWidth") <= 320  # nothing sideways at 320 px
    unnamed = small.evaluate(
        """[...document.querySelectorAll('button, select, input, textarea')]
             .filter((e) => !(e.getAttribute('aria-label') || e.textContent.trim() || e.labels?.length
                              || e.getAttribute('aria-labelledby')))
             .map((e) => e.id || e.className)"""
    )
    assert unnamed == []  # every control, icon buttons included, has a name a screen reader says
    assert small.get_attribute("#live", "aria-live") == "polite"


def test_the_app_shell_is_local_small_and_never_turns_text_into_html():
    index = (STATIC / "index.html").read_text()
    code = {p.name: p.read_text() for p in STATIC.iterdir() if p.suffix in (".js", ".css")}
    assert "http://" not in index and "https://" not in index  # no CDN: the phone may be offline
    assert not any(re.search(r"https?://(?!www\.w3\.org/2000/svg)", text) for text in code.values())
    assert sum(len(text.encode()) for text in code.values()) < 60_000
    scripts = "".join(text for name, text in code.items() if name.endswith(".js"))
    assert not re.search(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", scripts
    )
    cached = code["sw.js"]
    assert all(f"/static/{name}" in cached for name in code if name != "sw.js")
    manifest = (STATIC / "manifest.webmanifest").read_text()
    assert '"display": "standalone"' in manifest and "icon-512.png" in manifest
