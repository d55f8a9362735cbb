"""Ask a vision-language model to name cells, through the ``openai`` client.

Any OpenAI-compatible Chat Completions server works (``base_url``), so slides that must
stay on site can be sent to a local server. For every image:

* the answer is looked up in an on-disk cache keyed by the crop's pixels + how it was
  made + prompt + vocabulary + model (:mod:`histocluster.labelling.answer_cache`; a
  rerun costs nothing);
* otherwise, if the budget (``max_requests`` requests and ``max_cost_usd`` estimated from
  the reported token usage) allows, a request is sent, at most ``concurrency`` at a
  time, with the client's own retries with exponential backoff on rate limits (429),
  server errors and timeouts (``max_retries``, ``timeout_s``);
* the answer must be one of the vocabulary's labels (a JSON schema with an ``enum`` asks
  the server for exactly that where it supports structured output; a request refused
  with HTTP 400 *about* ``response_format`` is asked again in plain text, that request
  only); anything else is *rejected*: counted, logged, kept as raw text for inspection,
  never used as a label and never cached (the next run asks again);
* a response that is not a chat completion (a truncated JSON body, an HTML page, no
  ``choices``, negative token usage) is a failed request, like an HTTP 500, with an
  error that says what came instead.

Only a valid answer is cached: its label and the full raw text. The API key is passed
to the client and nowhere else: it is never logged or stored, and text a server sends
back (error bodies, answers) is redacted before it is logged or saved
(:func:`~histocluster.labelling.credentials.redact`), since a gateway may echo the
request's ``Authorization`` header.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from histocluster.labelling.answer_cache import AnswerCache, request_key
from histocluster.labelling.credentials import redact
from histocluster.labelling.settings import VLMSettings

logger = logging.getLogger(__name__)

STATUSES = ("ok", "rejected", "error", "budget", "skipped")


@dataclass
class Answer:
    """What came back for one image."""

    label: str | None
    status: str  # one of STATUSES
    raw: str = ""
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error: str = ""


def parse_label(text: str, vocabulary: list[str]) -> str | None:
    """The vocabulary label an answer names (JSON ``{"label": ...}`` or the bare label,
    case and surrounding punctuation ignored), or None."""
    candidate = text.strip()
    try:
        value = json.loads(candidate)
        if isinstance(value, dict):
            candidate = str(value.get("label", ""))
        elif isinstance(value, str):
            candidate = value
    except ValueError:
        pass
    wanted = candidate.strip().strip(".\"'` ").casefold()
    for label in vocabulary:
        if label.casefold() == wanted:
            return label
    return None


class Budget:
    """Requests sent and estimated cost spent so far in this run (thread-safe).

    A request is sent only when the cost spent, plus what the requests in flight may
    cost, plus what this one may cost stays within ``max_cost_usd``; what a request
    may cost is the most any one has cost so far. Until one request has reported its
    usage they go one at a time, and near the cap the pool slows to one at a time, so
    the estimate can overshoot by at most one request whose usage jumps.
    """

    def __init__(self, settings: VLMSettings) -> None:
        self.settings = settings
        self.requests = 0
        self.cost = 0.0
        self._in_flight = 0
        self._reserved = 0.0
        self._largest: float | None = None  # the most one request has cost
        self._changed = threading.Condition()

    def reserve(self) -> float | None:
        """Wait until one more request fits; the amount set aside for it, or None when
        the budget is spent (then nothing may be sent)."""
        s = self.settings
        with self._changed:
            while True:
                if self.requests >= s.max_requests or self.cost >= s.max_cost_usd:
                    return None
                if self._largest is None:
                    if self._in_flight == 0:  # what a request costs is not known yet: one at a time
                        estimate = 0.0
                        break
                elif self.cost + self._reserved + self._largest <= s.max_cost_usd:
                    estimate = self._largest
                    break
                elif self._in_flight == 0:
                    return None
                self._changed.wait()
            self.requests += 1
            self._in_flight += 1
            self._reserved += estimate
            return estimate

    def settle(self, reserved: float, cost: float | None) -> None:
        """A request came back: release what was set aside and add what it cost (None:
        no usage was reported because it failed)."""
        with self._changed:
            self._in_flight -= 1
            self._reserved -= reserved
            if cost is not None:
                self.cost += cost
                self._largest = max(self._largest or 0.0, cost)
            self._changed.notify_all()


def request_cost(settings: VLMSettings, prompt_tokens: int, completion_tokens: int) -> float:
    """Estimated USD of one request from its reported token usage."""
    return (
        prompt_tokens * settings.usd_per_million_input_tokens
        + completion_tokens * settings.usd_per_million_output_tokens
    ) / 1e6


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB array as PNG bytes (what is sent to the model)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def about_response_format(error: Exception) -> bool:
    """Whether an HTTP 400 is about the request's ``response_format`` (structured output
    unsupported), as opposed to any other bad request, which is not retried."""
    body = getattr(error, "body", None)
    parts = [str(getattr(error, "message", "") or "")]
    if isinstance(body, dict):
        inner = body.get("error", body)
        parts += (
            [str(inner.get(k, "")) for k in ("param", "message", "code")] if isinstance(inner, dict) else []
        )
    elif body is not None:
        parts.append(str(body))
    text = " ".join(parts).casefold()
    return any(word in text for word in ("response_format", "json_schema", "structured output"))


def _schema(vocabulary: list[str]) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "cell_label",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": list(vocabulary)}},
                "required": ["label"],
                "additionalProperties": False,
            },
        },
    }


class VLMClassifier:
    """Asks one model about many images with one prompt and vocabulary."""

    def __init__(
        self,
        settings: VLMSettings,
        api_key: str,
        prompt: str,
        vocabulary: list[str],
        cache: AnswerCache,
    ) -> None:
        import openai

        self.settings, self.prompt, self.vocabulary, self.cache = settings, prompt, list(vocabulary), cache
        self.budget = Budget(settings)
        self._openai = openai
        self.client = openai.OpenAI(
            api_key=api_key,
            base_url=settings.base_url,
            timeout=settings.timeout_s,
            max_retries=settings.max_retries,
        )
        self._api_key = api_key  # only to redact it from what a server sends back
        self._fallback_logged = threading.Event()
        self._no_usage_logged = threading.Event()

    def _messages(self, image: bytes, structured: bool) -> list[dict]:
        url = "data:image/png;base64," + base64.b64encode(image).decode()
        instruction = f"{self.prompt}\nAnswer with exactly one of: {', '.join(self.vocabulary)}." + (
            ' Reply as JSON: {"label": "<one of them>"}.' if structured else ""
        )
        return [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": instruction},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ]

    def _create(self, image: bytes, structured: bool):
        s = self.settings
        kwargs = dict(
            model=s.model,
            messages=self._messages(image, structured),
            temperature=s.temperature,
            max_tokens=s.max_tokens,
        )
        if structured:
            kwargs["response_format"] = _schema(self.vocabulary)
        return self.client.chat.completions.create(**kwargs)

    def _server_text(self, text: object, limit: int = 300) -> str:
        """Text a server sent, fit for a log line or an output: credentials redacted
        (a gateway may echo the request's headers), at most ``limit`` characters."""
        text = redact(str(text), self._api_key)
        return text if len(text) <= limit else text[:limit] + "…"

    def _call(self, image: bytes) -> Answer:
        openai = self._openai
        s = self.settings
        try:
            try:
                response = self._create(image, s.structured_output)
            except openai.BadRequestError as exc:
                if not (s.structured_output and about_response_format(exc)):
                    raise
                # This server refuses structured output: ask this image in plain text.
                if not self._fallback_logged.is_set():
                    self._fallback_logged.set()
                    logger.warning(
                        "The server refused structured output (HTTP 400: %s); such requests are asked "
                        "again in plain text (set classification.vlm.structured_output: false to skip "
                        "the first try)",
                        self._server_text(getattr(exc, "message", "") or exc, 200),
                    )
                response = self._create(image, structured=False)
        except openai.APITimeoutError:
            return Answer(None, "error", error=f"timeout after {s.timeout_s:g} s and {s.max_retries} retries")
        except openai.APIStatusError as exc:
            return Answer(None, "error", error=f"HTTP {exc.status_code} after {s.max_retries} retries")
        except openai.APIConnectionError as exc:
            return Answer(
                None, "error", error=self._server_text(f"connection failed: {exc.__cause__ or exc}")
            )
        except ValueError as exc:  # a 200 whose JSON body is cut short or broken
            return Answer(
                None, "error", error=self._server_text(f"malformed response: not valid JSON ({exc})")
            )
        return self._read(response)

    def _read(self, response: object) -> Answer:
        """The answer in a 200 response, or an error saying what came instead."""
        from openai.types.chat import ChatCompletion

        if not isinstance(response, ChatCompletion):
            kind = type(response).__name__
            return Answer(
                None,
                "error",
                error=self._server_text(
                    f"malformed response: a {kind}, not a chat completion: {response!r}", 200
                ),
            )
        usage = response.usage
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        if prompt_tokens < 0 or completion_tokens < 0:
            return Answer(
                None,
                "error",
                error=f"malformed response: negative token usage ({prompt_tokens} prompt, {completion_tokens} completion)",
            )
        if usage is None and not self._no_usage_logged.is_set():
            self._no_usage_logged.set()
            logger.warning(
                "The server reports no token usage: max_cost_usd cannot be enforced, only max_requests (%d)",
                self.settings.max_requests,
            )
        cost = request_cost(self.settings, prompt_tokens, completion_tokens)
        if not response.choices:
            fields = sorted(k for k, v in response.model_dump().items() if v not in (None, [], {}))
            extra = response.model_extra or {}
            said = f": {self._server_text(extra['error'], 200)}" if "error" in extra else ""
            return Answer(
                None,
                "error",
                error=f"malformed response: no choices (fields: {', '.join(fields)}){said}",
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=cost,
            )
        text = response.choices[0].message.content or ""
        label = parse_label(text, self.vocabulary)
        return Answer(
            label,
            "ok" if label else "rejected",
            raw=self._server_text(text, 2000),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
        )

    def _cached(self, record: dict) -> Answer | None:
        """A cached answer, or None when the record holds no label of this vocabulary
        (an entry of an older version that cached a rejected answer is asked again)."""
        label = record.get("label")
        if label not in self.vocabulary:
            label = parse_label(str(record.get("raw", "")), self.vocabulary)
        if label is None:
            return None
        return Answer(label, "ok", raw=str(record.get("raw", "")), cached=True)

    def ask(self, images: list[np.ndarray], crop_spec: str = "") -> list[Answer]:
        """One answer per image (RGB uint8 arrays, sent as PNG), in order (see the module
        doc). ``crop_spec`` says how the crops were made; it is part of the cache key."""
        answers: list[Answer | None] = [None] * len(images)
        keys = [
            request_key(image, crop_spec, self.prompt, self.vocabulary, self.settings.model)
            for image in images
        ]
        pending = []
        for i, key in enumerate(keys):
            record = self.cache.get(key)
            answers[i] = self._cached(record) if record is not None else None
            if answers[i] is None:
                pending.append(i)

        def run(i: int) -> tuple[int, Answer]:
            reserved = self.budget.reserve()
            if reserved is None:
                return i, Answer(None, "budget", error="budget reached")
            answer = None
            try:
                answer = self._call(png_bytes(images[i]))
            finally:
                reported = answer is not None and (
                    answer.status in ("ok", "rejected") or answer.prompt_tokens or answer.completion_tokens
                )
                self.budget.settle(reserved, answer.cost_usd if reported else None)
            if answer.status == "ok":  # only what was parsed; a bad answer is asked again next run
                self.cache.put(
                    keys[i], {"label": answer.label, "raw": answer.raw, "model": self.settings.model}
                )
            return i, answer

        with (
            ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool,
            tqdm(total=len(pending), desc=f"Asking {self.settings.model}", unit="image") as progress,
        ):
            for i, answer in pool.map(run, pending):
                answers[i] = answer
                progress.update(1)
                progress.set_postfix(requests=self.budget.requests, usd=f"{self.budget.cost:.3f}")
        result = [a for a in answers if a is not None]
        counts = {status: sum(a.status == status for a in result) for status in STATUSES}
        logger.info(
            "VLM %s: %d images, %d from the cache, %d requests sent (~$%.4f); %s",
            self.settings.model,
            len(images),
            sum(a.cached for a in result),
            self.budget.requests,
            self.budget.cost,
            ", ".join(f"{k} {v}" for k, v in counts.items() if v),
        )
        if counts["rejected"]:
            logger.warning("VLM: %d answers were not in the vocabulary and were rejected", counts["rejected"])
        if counts["budget"]:
            logger.warning(
                "VLM: budget reached (max_requests %d, max_cost_usd %g): %d images not asked",
                self.settings.max_requests,
                self.settings.max_cost_usd,
                counts["budget"],
            )
        if counts["error"]:
            logger.error(
                "VLM: %d requests failed (%s)", counts["error"], next(a.error for a in result if a.error)
            )
        return result
