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
  never used as a label.

The API key is passed to the client and nowhere else: it is never logged or stored.
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
    """Requests and estimated cost spent so far in this run (thread-safe)."""

    def __init__(self, settings: VLMSettings) -> None:
        self.settings = settings
        self.requests = 0
        self.cost = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> bool:
        """Take one request from the budget, or say it is spent."""
        with self._lock:
            if self.requests >= self.settings.max_requests or self.cost >= self.settings.max_cost_usd:
                return False
            self.requests += 1
            return True

    def charge(self, prompt_tokens: int, completion_tokens: int) -> float:
        cost = (
            prompt_tokens * self.settings.usd_per_million_input_tokens
            + completion_tokens * self.settings.usd_per_million_output_tokens
        ) / 1e6
        with self._lock:
            self.cost += cost
        return cost


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
        self._fallback_logged = threading.Event()

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
                        "The server refused structured output (HTTP 400 about response_format); "
                        "such requests are asked again in plain text (set "
                        "classification.vlm.structured_output: false to skip the first try)"
                    )
                response = self._create(image, structured=False)
        except openai.APITimeoutError:
            return Answer(None, "error", error=f"timeout after {s.timeout_s:g} s and {s.max_retries} retries")
        except openai.APIStatusError as exc:
            return Answer(None, "error", error=f"HTTP {exc.status_code} after {s.max_retries} retries")
        except openai.APIConnectionError as exc:
            return Answer(None, "error", error=f"connection failed: {exc.__cause__ or exc}")
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = self.budget.charge(prompt_tokens, completion_tokens)
        label = parse_label(text, self.vocabulary)
        return Answer(
            label,
            "ok" if label else "rejected",
            raw=text[:200],
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
        )

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
            if record is not None:
                label = parse_label(record.get("raw", ""), self.vocabulary) if record.get("raw") else None
                answers[i] = Answer(
                    label, "ok" if label else "rejected", raw=record.get("raw", ""), cached=True
                )
            else:
                pending.append(i)

        def run(i: int) -> tuple[int, Answer]:
            if not self.budget.reserve():
                return i, Answer(None, "budget", error="budget reached")
            answer = self._call(png_bytes(images[i]))
            if answer.status in ("ok", "rejected"):
                self.cache.put(keys[i], {"raw": answer.raw, "model": self.settings.model})
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
