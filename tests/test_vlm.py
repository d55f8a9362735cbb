"""The real ``openai`` client against a Chat Completions server on loopback."""

from __future__ import annotations

import base64
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from histocluster.labelling.settings import VLMSettings
from histocluster.labelling.vlm_client import AnswerCache, VLMClassifier, parse_label

from .chat_server import ChatServer, completion, error

VOCABULARY = ["lymphocyte", "fibroblast", "epithelial"]
KEY = "sk-test-DO-NOT-LEAK-1234"
FAST = {"retry-after-ms": "5"}  # the client honours it: retries without long sleeps


def crops(n: int) -> list[np.ndarray]:
    return [np.full((8, 8, 3), 10 * k, np.uint8) for k in range(n)]


def sent_pixels(request: dict) -> bytes:
    """The pixels of the image a request carried (decoded from its PNG data URL)."""
    url = request["json"]["messages"][0]["content"][1]["image_url"]["url"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",")[1])))).tobytes()


def classifier(server: ChatServer, tmp_path, **settings) -> VLMClassifier:
    s = VLMSettings(base_url=server.base_url, model="test-model", **settings)
    return VLMClassifier(s, KEY, "What cell is this?", VOCABULARY, AnswerCache(tmp_path / "cache"))


def label(text: str):
    return lambda request, n: (200, completion(text), {}, 0.0)


def test_parse_label():
    assert parse_label('{"label": "Lymphocyte"}', VOCABULARY) == "lymphocyte"
    assert parse_label("fibroblast.", VOCABULARY) == "fibroblast"
    assert parse_label('"epithelial"', VOCABULARY) == "epithelial"
    assert parse_label("Error - Rate Limited", VOCABULARY) is None
    assert parse_label('{"label": "tumour"}', VOCABULARY) is None
    assert parse_label("a lymphocyte, I think", VOCABULARY) is None


def test_correct_answers_and_what_is_sent(tmp_path):
    with ChatServer(label('{"label": "lymphocyte"}')) as server:
        answers = classifier(server, tmp_path).ask(crops(3))
    assert [a.label for a in answers] == ["lymphocyte"] * 3 and {a.status for a in answers} == {"ok"}
    assert all(a.cost_usd == pytest.approx((100 * 2.5 + 5 * 10.0) / 1e6) for a in answers)
    request = server.requests[0]
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    body = request["json"]
    assert body["model"] == "test-model" and body["temperature"] == 0.0
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == VOCABULARY
    image_url = body["messages"][0]["content"][1]["image_url"]["url"]
    assert image_url.startswith("data:image/png;base64,")
    assert {sent_pixels(r) for r in server.requests} == {c.tobytes() for c in crops(3)}


def test_answers_outside_the_vocabulary_are_rejected_not_stored(tmp_path):
    replies = ["Error - Rate Limited", '{"label": "tumour"}', '{"label": "fibroblast"}']
    with ChatServer(lambda request, n: (200, completion(replies[n]), {}, 0.0)) as server:
        answers = classifier(server, tmp_path, concurrency=1).ask(crops(3))
    assert [a.status for a in answers] == ["rejected", "rejected", "ok"]
    assert [a.label for a in answers] == [None, None, "fibroblast"]
    assert answers[0].raw == "Error - Rate Limited"


def test_rate_limit_then_success_is_retried(tmp_path):
    def reply(request, n):
        return (
            (429, error(429, "slow down"), FAST, 0.0) if n < 2 else (200, completion("epithelial"), {}, 0.0)
        )

    with ChatServer(reply) as server:
        (answer,) = classifier(server, tmp_path, max_retries=3).ask(crops(1))
    assert answer.status == "ok" and answer.label == "epithelial"
    assert len(server.requests) == 3


def test_server_errors_until_the_retry_limit(tmp_path):
    with ChatServer(lambda request, n: (500, error(500, "boom"), FAST, 0.0)) as server:
        (answer,) = classifier(server, tmp_path, max_retries=2).ask(crops(1))
    assert answer.status == "error" and answer.label is None
    assert answer.error == "HTTP 500 after 2 retries"
    assert len(server.requests) == 3  # the first try and two retries
    assert not list((tmp_path / "cache").rglob("*.json"))  # failures are not cached


def test_timeout(tmp_path):
    with ChatServer(lambda request, n: (200, completion("lymphocyte"), {}, 1.5)) as server:
        (answer,) = classifier(server, tmp_path, timeout_s=0.2, max_retries=0).ask(crops(1))
    assert answer.status == "error" and "timeout after 0.2 s" in answer.error


def test_budget_stops_cleanly(tmp_path):
    with ChatServer(label("lymphocyte")) as server:
        answers = classifier(server, tmp_path, max_requests=2, concurrency=1).ask(crops(5))
    assert [a.status for a in answers].count("ok") == 2
    assert [a.status for a in answers].count("budget") == 3
    assert len(server.requests) == 2

    # A cost budget: each answer costs 1e6 × $2.5 / 1e6 = $2.5; $5 allows two requests and
    # $4 one (a second would spend $5).
    def reply(request, n):
        return 200, completion("fibroblast", prompt_tokens=1_000_000, completion_tokens=0), {}, 0.0

    for cap, sent in ((5.0, 2), (4.0, 1)):
        with ChatServer(reply) as server:
            answers = classifier(server, tmp_path / str(cap), max_cost_usd=cap, concurrency=4).ask(crops(5))
        assert [a.status for a in answers].count("ok") == sent and len(server.requests) == sent
        assert sum(a.cost_usd for a in answers) <= cap


def test_the_cost_cap_holds_with_many_requests_in_flight(tmp_path):
    """A server reporting 10 M tokens a request ($25 each) against a $5 cap: with eight
    requests allowed in flight, one request is sent (what a request costs is not known
    until one comes back), not eight."""
    reply = lambda request, n: (200, completion("fibroblast", prompt_tokens=10_000_000), {}, 0.2)  # noqa: E731
    with ChatServer(reply) as server:
        answers = classifier(server, tmp_path, max_cost_usd=5.0, concurrency=8).ask(crops(16))
    assert len(server.requests) == 1
    assert [a.status for a in answers].count("budget") == 15
    # Cheap requests still go eight at a time: all 16 are answered.
    with ChatServer(label("fibroblast")) as server:
        answers = classifier(server, tmp_path / "cheap", max_cost_usd=5.0, concurrency=8).ask(crops(16))
    assert [a.status for a in answers].count("ok") == 16


def test_negative_token_usage_is_a_failed_request_not_a_refund(tmp_path):
    reply = lambda request, n: (200, completion("fibroblast", prompt_tokens=-5_000_000), {}, 0.0)  # noqa: E731
    with ChatServer(reply) as server:
        classify = classifier(server, tmp_path, concurrency=1)
        answers = classify.ask(crops(2))
    assert [a.status for a in answers] == ["error", "error"]
    assert "negative token usage" in answers[0].error and classify.budget.cost == 0
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_rerun_is_answered_from_the_cache(tmp_path):
    with ChatServer(label("fibroblast")) as server:
        first = classifier(server, tmp_path).ask(crops(4))
        again = classifier(server, tmp_path).ask(crops(4))
    assert len(server.requests) == 4  # the second run sent nothing
    assert [a.label for a in again] == [a.label for a in first] and all(a.cached for a in again)
    assert all(a.cost_usd == 0 for a in again)
    # Another prompt, model or vocabulary is another question.
    with ChatServer(label("fibroblast")) as server:
        VLMClassifier(
            VLMSettings(base_url=server.base_url, model="other-model"),
            KEY,
            "What cell is this?",
            VOCABULARY,
            AnswerCache(tmp_path / "cache"),
        ).ask(crops(1))
    assert len(server.requests) == 1
    assert KEY not in "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))


def test_server_without_structured_output_gets_plain_questions(tmp_path):
    def reply(request, n):
        if "response_format" in request:
            return 400, error(400, "response_format is not supported"), {}, 0.0
        return 200, completion("Lymphocyte"), {}, 0.0

    with ChatServer(reply) as server:
        answers = classifier(server, tmp_path, concurrency=1).ask(crops(2))
    assert [a.label for a in answers] == ["lymphocyte", "lymphocyte"]
    # Each image: refused with structured output, asked again in plain text.
    assert ["response_format" in r["json"] for r in server.requests] == [True, False, True, False]


def test_a_bad_request_about_something_else_does_not_switch_structured_output_off(tmp_path):
    """One HTTP 400 that is not about response_format (an image the server dislikes) fails
    that request only; the next image is still asked for structured output."""

    def reply(request, n):
        if n == 0:
            return 400, error(400, "image could not be decoded"), {}, 0.0
        return 200, completion('{"label": "fibroblast"}'), {}, 0.0

    with ChatServer(reply) as server:
        answers = classifier(server, tmp_path, concurrency=1, max_retries=0).ask(crops(2))
    assert [a.status for a in answers] == ["error", "ok"] and "HTTP 400" in answers[0].error
    assert len(server.requests) == 2 and all("response_format" in r["json"] for r in server.requests)


def test_cache_key_is_the_pixels_not_their_png_encoding(tmp_path, monkeypatch):
    """A Pillow that encodes the same crop into other PNG bytes must not re-bill every
    request: the second run, with another encoder, is answered from the cache."""
    from histocluster.labelling import vlm_client

    with ChatServer(label("fibroblast")) as server:
        classifier(server, tmp_path).ask(crops(3))

        def other_encoder(image):
            buffer = io.BytesIO()
            Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG", compress_level=0)
            return buffer.getvalue()

        assert other_encoder(crops(3)[1]) != vlm_client.png_bytes(crops(3)[1])
        monkeypatch.setattr(vlm_client, "png_bytes", other_encoder)
        again = classifier(server, tmp_path).ask(crops(3))
    assert len(server.requests) == 3 and all(a.cached for a in again)
    # How the crop was made is part of the question.
    with ChatServer(label("fibroblast")) as server:
        classifier(server, tmp_path).ask(crops(1), crop_spec="image_size=512")
    assert len(server.requests) == 1


def test_a_long_valid_answer_is_the_same_answer_on_rerun(tmp_path):
    """An answer over 200 characters (an extra JSON field; the label after leading
    whitespace) is accepted, and the rerun, from the cache, gives the same label."""
    replies = [
        json.dumps({"label": "fibroblast", "reasoning": "spindle-shaped nucleus, " * 12}),
        " " * 250 + "lymphocyte",
    ]
    with ChatServer(lambda request, n: (200, completion(replies[n]), {}, 0.0)) as server:
        first = classifier(server, tmp_path, concurrency=1).ask(crops(2))
        again = classifier(server, tmp_path, concurrency=1).ask(crops(2))
    assert [a.label for a in first] == ["fibroblast", "lymphocyte"]
    assert [a.label for a in again] == ["fibroblast", "lymphocyte"] and all(a.cached for a in again)
    assert len(server.requests) == 2
    assert again[0].raw == replies[0]  # the full raw text is kept


def test_a_rejected_answer_is_not_cached_so_the_next_run_asks_again(tmp_path):
    replies = ["Error - Rate Limited", "fibroblast"]
    with ChatServer(lambda request, n: (200, completion(replies[min(n, 1)]), {}, 0.0)) as server:
        (first,) = classifier(server, tmp_path).ask(crops(1))
        (again,) = classifier(server, tmp_path).ask(crops(1))
    assert first.status == "rejected" and again.status == "ok" and again.label == "fibroblast"
    assert len(server.requests) == 2


def test_an_old_cache_entry_holding_a_rejected_answer_is_asked_again(tmp_path):
    from histocluster.labelling.answer_cache import request_key

    cache = AnswerCache(tmp_path / "cache")
    cache.put(request_key(crops(1)[0], "", "What cell is this?", VOCABULARY, "test-model"), {"raw": "Error"})
    with ChatServer(label("epithelial")) as server:
        (answer,) = classifier(server, tmp_path).ask(crops(1))
    assert answer.label == "epithelial" and not answer.cached and len(server.requests) == 1


ECHO = f"Bad request. Received headers: Authorization: Bearer {KEY}; x-api-key={KEY}"


@pytest.mark.parametrize("about_format", [True, False])
def test_the_key_never_reaches_the_log_or_the_answers_when_a_server_echoes_it(tmp_path, caplog, about_format):
    """A gateway that echoes the request's headers in its 400 body (about response_format
    or not) and in its answers: the key appears in no log line, answer, error or cache file."""

    def reply(request, n):
        if "response_format" in request:
            message = ("response_format unsupported. " if about_format else "") + ECHO
            return 400, error(400, message), {}, 0.0
        return 200, completion(f"lymphocyte? {ECHO}"), {}, 0.0

    caplog.set_level(logging.DEBUG)
    with ChatServer(reply) as server:
        answers = classifier(server, tmp_path, concurrency=2, max_retries=0).ask(crops(3))
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"  # it was sent
    assert not any(KEY in record.getMessage() for record in caplog.records)
    assert not any(KEY in (a.raw + a.error) for a in answers)
    assert KEY not in "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    if about_format:
        warning = next(r.getMessage() for r in caplog.records if "structured output" in r.getMessage())
        assert "Bearer ***" in warning  # what the server said is shown, redacted


def test_redact_hides_keys_and_bearer_tokens():
    from histocluster.labelling.credentials import Secret, redact

    text = redact(
        f"Authorization: Bearer abc.DEF-123456 key {KEY} api_key=hunter22 sk-proj-ABCDEFGH12", Secret(KEY)
    )
    assert "abc.DEF-123456" not in text and KEY not in text and "hunter22" not in text
    assert "sk-proj-ABCDEFGH12" not in text and text.startswith("Authorization: Bearer ***")


@pytest.mark.parametrize(
    ("body", "headers", "said"),
    [
        (
            '{"id": "chatcmpl-1", "choices": [{"index": 0, "mess',
            {"content-type": "application/json"},
            "not valid JSON",
        ),
        ("<html><body>502 Bad Gateway</body></html>", {"content-type": "text/html"}, "not a chat completion"),
        (
            {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []},
            {},
            "no choices",
        ),
        (
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "error": {"message": "overloaded"},
            },
            {},
            "overloaded",
        ),
    ],
    ids=["truncated-json", "html-page", "empty-choices", "error-without-choices"],
)
def test_a_malformed_200_is_a_failed_request_that_says_what_came(tmp_path, body, headers, said):
    """Broken 200s count as failed requests like a 500 (the run goes on, nothing cached),
    and the error says what came instead of calling it an answer outside the vocabulary."""

    def reply(request, n):
        return (200, body, headers, 0.0) if n == 0 else (200, completion("fibroblast"), {}, 0.0)

    with ChatServer(reply) as server:
        answers = classifier(server, tmp_path, concurrency=1, max_retries=0).ask(crops(2))
    assert [a.status for a in answers] == ["error", "ok"]
    assert said in answers[0].error and "malformed response" in answers[0].error
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1
