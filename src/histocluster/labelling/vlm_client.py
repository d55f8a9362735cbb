"""Ask a vision-language model to name cells, through the ``openai`` client.

Any OpenAI-compatible Chat Completions server works (``base_url``), so slides that must
stay on site can be sent to a local server. For every image:

* the answer is looked up in an on-disk cache keyed by image + prompt + vocabulary +
  model (a rerun costs nothing);
* otherwise, if the budget (``max_requests`` requests and ``max_cost_usd`` estimated from
  the reported token usage) allows, a request is sent, at most ``concurrency`` at a
  time, with the client's own retries with exponential backoff on rate limits (429),
  server errors and timeouts (``max_retries``, ``timeout_s``);
* the answer must be one of the vocabulary's labels (a JSON schema with an ``enum`` asks
  the server for exactly that where it supports structured output); anything else is
  *rejected*: counted, logged, kept as raw text for inspection, never used as a label.

The API key is passed to the client and nowhere else: it is never logged or stored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as settings_dataclass
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

STATUSES = ("ok", "rejected", "error", "budget", "skipped")


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class VLMSettings:
    """How the model is asked (see the module doc)."""

    model: str = "gpt-4o"
    base_url: str | None = Field(None, description="an OpenAI-compatible server; null = api.openai.com")
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(50, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0)
    concurrency: int = Field(4, ge=1)
    max_requests: int = Field(500, ge=0, description="requests sent per run (cache hits are free)")
    max_cost_usd: float = Field(5.0, ge=0, description="estimated from token usage and the prices below")
    usd_per_million_input_tokens: float = Field(2.5, ge=0)
    usd_per_million_output_tokens: float = Field(10.0, ge=0)
    structured_output: bool = Field(True, description="ask for JSON with the label from an enum")


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


def request_key(image: bytes, prompt: str, vocabulary: list[str], model: str) -> str:
    """Cache key of one question."""
    digest = hashlib.sha256()
    for part in (image, prompt.encode(), json.dumps(sorted(vocabulary)).encode(), model.encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


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


class AnswerCache:
    """Answers on disk, one JSON file per key (``<folder>/<key[:2]>/<key>.json``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, record: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(record))
        partial.replace(path)


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
        self._structured = settings.structured_output

    def _messages(self, image: bytes) -> list[dict]:
        url = "data:image/png;base64," + base64.b64encode(image).decode()
        instruction = f"{self.prompt}\nAnswer with exactly one of: {', '.join(self.vocabulary)}." + (
            ' Reply as JSON: {"label": "<one of them>"}.' if self._structured else ""
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

    def _call(self, image: bytes) -> Answer:
        openai = self._openai
        s = self.settings
        kwargs = dict(
            model=s.model, messages=self._messages(image), temperature=s.temperature, max_tokens=s.max_tokens
        )
        try:
            if self._structured:
                try:
                    response = self.client.chat.completions.create(
                        **kwargs, response_format=_schema(self.vocabulary)
                    )
                except openai.BadRequestError as exc:
                    # A server without structured output: ask in plain text from now on.
                    logger.warning(
                        "The server refused structured output (%s); asking for plain text", exc.message
                    )
                    self._structured = False
                    kwargs["messages"] = self._messages(image)
                    response = self.client.chat.completions.create(**kwargs)
            else:
                response = self.client.chat.completions.create(**kwargs)
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

    def ask(self, images: list[bytes]) -> list[Answer]:
        """One answer per image, in order (see the module doc)."""
        answers: list[Answer | None] = [None] * len(images)
        keys = [request_key(image, self.prompt, self.vocabulary, self.settings.model) for image in images]
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
            answer = self._call(images[i])
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
