"""The real ``openai`` client against a Chat Completions server on loopback."""

from __future__ import annotations

import base64
import io

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
    # A cost budget: each answer costs 1e6 × $2.5 / 1e6 = $2.5; $4 allows two requests.
    reply = lambda request, n: (200, completion("fibroblast", prompt_tokens=1_000_000), {}, 0.0)  # noqa: E731
    with ChatServer(reply) as server:
        answers = classifier(server, tmp_path / "b", max_cost_usd=4.0, concurrency=1).ask(crops(5))
    assert [a.status for a in answers] == ["ok", "ok", "budget", "budget", "budget"]


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
