"""`lantern ask` and friends, run as a user runs them: a real process, the real model, no network."""

from __future__ import annotations

import json

import pytest

from tests.conftest import network_isolation_available, run_lantern

QUESTION = "What is the capital of France? Answer in one word."


@pytest.mark.skipif(not network_isolation_available(), reason="needs unshare for a netns")
def test_ask_answers_with_the_bundled_model_with_no_network(home):
    result = run_lantern("ask", QUESTION, "--temperature", "0", isolate_network=True)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout.decode()


def test_ask_json_reports_text_model_tokens_and_timings(home, chat_model):
    result = run_lantern("ask", QUESTION, "--temperature", "0", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "Paris" in data["text"]
    assert data["model"] == chat_model
    assert data["usage"]["prompt_tokens"] > 10
    assert data["usage"]["completion_tokens"] > 0
    assert data["timings"]["time_to_first_token_s"] > 0
    assert data["finish_reason"] == "stop"


def test_a_conversation_survives_a_restart(home, chat_model):
    first = run_lantern("ask", "My cat is called Miso. Just say OK.", "--temperature", "0", "--json")
    assert first.returncode == 0, first.stderr
    first_data = json.loads(first.stdout)

    # A new process continues the same conversation from the database.
    second = run_lantern("ask", "-c", "What is my cat called?", "--temperature", "0", "--json")
    assert second.returncode == 0, second.stderr
    second_data = json.loads(second.stdout)
    assert second_data["conversation_id"] == first_data["conversation_id"]
    assert second_data["usage"]["prompt_tokens"] > first_data["usage"]["prompt_tokens"]

    assert second_data["model"] == chat_model

    shown = run_lantern("conversations", "show", first_data["conversation_id"]).stdout.decode()
    assert "My cat is called Miso." in shown
    assert "What is my cat called?" in shown
    assert shown.count("[user]") == 2 and shown.count("[assistant]") == 2
    assert "[cut]" not in shown


def test_prompt_can_come_from_stdin(home):
    result = run_lantern("ask", "--temperature", "0", "--max-tokens", "16", input=QUESTION.encode())
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout.decode()


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["ask", b"caf\xe9 au lait".decode("utf-8", "surrogateescape")], None, "not valid UTF-8"),
        (["ask"], b"caf\xe9 au lait", "not valid UTF-8"),
        (["ask", "   "], None, "the prompt is empty"),
        (["ask", "hi", "--model", "no-such-model"], None, "no model named 'no-such-model'"),
        (["ask", "hi", "--model", "/no/such/model.gguf"], None, "/no/such/model.gguf does not exist"),
        (["--model", "x.gguf", "ask", "hi"], None, "put it after: lantern ask --model"),
        (["ask", "hi", "--temperature", "-1"], None, "temperature must be between"),
        (["ask", "hi", "--max-tokens", "0"], None, "max tokens must be at least 1"),
        (["ask", "-c", "hi"], None, "no conversation to continue"),
        (["ask", "hi", "--cid", "feedface"], None, "no conversation 'feedface'"),
        (["conversations", "show", "feedface"], None, "no conversation 'feedface'"),
    ],
)
def test_user_mistakes_get_one_clear_line_and_no_traceback(home, args, stdin, message):
    result = run_lantern(*args, input=stdin)
    assert result.returncode != 0
    err = result.stderr.decode()
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_broken_config_file_is_named_in_the_error(home):
    run_lantern("models", "list")
    (home / "config.toml").write_text("[runtime]\nthreads = 'many'\n")
    result = run_lantern("ask", "hi")
    assert result.returncode != 0
    err = result.stderr.decode()
    assert "config.toml" in err and "runtime.threads must be int" in err


def test_the_default_config_is_written_and_documented(home):
    run_lantern("models", "list")
    text = (home / "config.toml").read_text()
    assert 'default_model = "smollm2-135m-instruct"' in text
    assert "context_length" in text and "temperature" in text
