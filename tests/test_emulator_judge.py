"""The emulator's vision side of OpenAI chat: image token accounting and the emulated judge.

Driven through the real ``openai`` SDK. The judge's truth (:mod:`pixellab.emulator.judge`) is
what pixellab's judge tests calibrate against, so these tests pin its rule down: who wins for
given qualities, how position bias shows, and that a seed reproduces the verdicts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from pixellab.emulator import Emulator
from pixellab.emulator.openai_api import image_tokens, prompt_tokens
from pixellab.verdicts import response_format


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(latency_s=0.0, seed=3) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _fresh(emu: Emulator) -> Iterator[None]:
    yield
    emu.clear_judge()
    emu.faults.clear()


@pytest.fixture
def client(emu: Emulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.openai_base_url, api_key="sk-emulator-" + "x" * 20,
                         max_retries=0)


def png(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def sha(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


SOURCE, OUT_A, OUT_B = png((200, 200, 200)), png((255, 0, 0)), png((0, 0, 255))
CRITERIA = ("fidelity", "sharpness", "background")


def judge_format(criteria: tuple[str, ...] = CRITERIA) -> Any:
    """The response format pixellab's judge sends (``Any``: the SDK types it as a TypedDict)."""
    return response_format(list(criteria))


def judge_messages(first: bytes, second: bytes, source: bytes = SOURCE) -> Any:
    """Source photo, then output A, then output B, with text labels between them."""
    parts: list[dict[str, Any]] = []
    for label, image in (("Source photo:", source), ("Output A:", first), ("Output B:", second)):
        parts.append({"type": "text", "text": label})
        parts.append({"type": "image_url", "image_url": {"url": data_url(image),
                                                         "detail": "low"}})
    return [{"role": "system", "content": "You compare two product photo edits."},
            {"role": "user", "content": parts}]


def ask(client: openai.OpenAI, first: bytes, second: bytes) -> dict[str, Any]:
    response = client.chat.completions.create(
        model="gpt-4o", messages=judge_messages(first, second),
        response_format=judge_format())
    return dict(json.loads(response.choices[0].message.content or ""))


# --------------------------------------------------------------------------------------------
# image token accounting
# --------------------------------------------------------------------------------------------


def test_image_tokens_follow_openais_worked_examples() -> None:
    # The examples in OpenAI's "Images and vision" guide, "Calculating costs".
    assert image_tokens(1024, 1024, "high") == 765
    assert image_tokens(2048, 4096, "high") == 1105
    assert image_tokens(4096, 8192, "low") == 85
    assert image_tokens(1024, 1024, None) == image_tokens(1024, 1024, "auto") == 765
    assert image_tokens(100, 100, "high") == 85 + 170  # small images are not scaled up


def test_usage_counts_an_image_by_its_tiles_not_its_base64(client: openai.OpenAI) -> None:
    image = png((30, 120, 60), (1024, 1024))

    def usage(detail: str) -> int:
        messages: Any = [{"role": "user", "content": [
            {"type": "text", "text": "Describe this photo."},
            {"type": "image_url", "image_url": {"url": data_url(image), "detail": detail}}]}]
        response = client.chat.completions.create(model="gpt-4o", messages=messages)
        assert response.usage is not None
        return response.usage.prompt_tokens

    high, low = usage("high"), usage("low")
    assert 85 + 170 * 4 < high <= 85 + 170 * 4 + 20  # 4 tiles, plus a few text tokens
    assert 85 < low <= 85 + 20
    assert high - low == 170 * 4


def test_an_unreadable_image_costs_the_base_85() -> None:
    def messages(url: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url, "detail": "high"}}]}]

    text_only = prompt_tokens([{"role": "user", "content": []}])
    for url in ("https://example.com/photo.png", "data:image/png;base64,bm90IGFuIGltYWdl"):
        assert prompt_tokens(messages(url)) == text_only + 85


# --------------------------------------------------------------------------------------------
# the emulated judge
# --------------------------------------------------------------------------------------------


def test_without_a_truth_judge_calls_get_the_schema_filler(client: openai.OpenAI) -> None:
    answer = ask(client, OUT_B, OUT_A)
    assert answer == {"criteria": dict.fromkeys(CRITERIA, "A"), "winner": "A",
                      "reason": "emulated"}


def test_the_better_image_wins_in_either_position(emu: Emulator, client: openai.OpenAI) -> None:
    emu.judge({sha(OUT_A): 1.0, sha(OUT_B): 0.0})
    first = ask(client, OUT_A, OUT_B)
    assert first["winner"] == "A" and first["criteria"] == dict.fromkeys(CRITERIA, "A")
    assert first["reason"].startswith("emulated judge: A q=1.000 B q=0.000")
    swapped = ask(client, OUT_B, OUT_A)
    assert swapped["winner"] == "B" and swapped["criteria"] == dict.fromkeys(CRITERIA, "B")


def test_a_difference_within_the_margin_is_a_tie(emu: Emulator, client: openai.OpenAI) -> None:
    emu.judge({sha(OUT_A): 0.55, sha(OUT_B): 0.5}, tie_margin=0.1)
    assert ask(client, OUT_A, OUT_B)["winner"] == "tie"
    unknown = png((1, 2, 3))  # unlisted: quality 0.0, so far below A
    assert ask(client, unknown, OUT_A)["winner"] == "B"


def test_full_position_bias_always_picks_a(emu: Emulator, client: openai.OpenAI) -> None:
    emu.judge({sha(OUT_A): 1.0, sha(OUT_B): 0.0}, position_bias=1.0)
    assert ask(client, OUT_A, OUT_B)["winner"] == "A"
    assert ask(client, OUT_B, OUT_A)["winner"] == "A"


async def test_partial_position_bias_shows_as_that_share_of_wrong_a_wins(
        emu: Emulator) -> None:
    emu.judge({sha(OUT_A): 1.0, sha(OUT_B): 0.0}, position_bias=0.3, seed=11)
    aclient = openai.AsyncOpenAI(base_url=emu.openai_base_url,
                                 api_key="sk-emulator-" + "x" * 20, max_retries=0)
    gate = asyncio.Semaphore(16)

    async def winner() -> str:  # A is the worse one: every "A" is the bias
        async with gate:
            response = await aclient.chat.completions.create(
                model="gpt-4o", messages=judge_messages(OUT_B, OUT_A),
                response_format=judge_format())
        return str(json.loads(response.choices[0].message.content or "")["winner"])

    # Concurrent calls take the per-call draws in any order, but the set of draws is fixed.
    winners = await asyncio.gather(*(winner() for _ in range(200)))
    await aclient.close()
    assert set(winners) <= {"A", "B"}
    assert 0.2 <= winners.count("A") / len(winners) <= 0.4


def test_a_seed_reproduces_noisy_verdicts(emu: Emulator, client: openai.OpenAI) -> None:
    def run() -> list[str]:
        emu.judge({sha(OUT_A): 0.1, sha(OUT_B): 0.0}, noise=1.0, tie_margin=0.2, seed=5)
        return [ask(client, OUT_A, OUT_B)["winner"] for _ in range(20)]

    first = run()
    assert run() == first
    assert len(set(first)) > 1  # the noise is big enough to change answers


def test_faults_still_apply_to_judge_calls(emu: Emulator, client: openai.OpenAI) -> None:
    emu.judge({sha(OUT_A): 1.0})
    emu.faults.add("openai", "reply", content="I cannot compare these.")
    response = client.chat.completions.create(
        model="gpt-4o", messages=judge_messages(OUT_A, OUT_B),
        response_format=judge_format())
    assert response.choices[0].message.content == "I cannot compare these."
    emu.faults.add("openai", "blank")
    response = client.chat.completions.create(
        model="gpt-4o", messages=judge_messages(OUT_A, OUT_B),
        response_format=judge_format())
    assert response.choices[0].message.content == ""
    assert ask(client, OUT_A, OUT_B)["winner"] == "A"  # faults spent: the judge answers again


def test_other_schemas_are_not_judged(emu: Emulator, client: openai.OpenAI) -> None:
    emu.judge({sha(OUT_B): 1.0})
    fmt = judge_format()
    fmt["json_schema"]["name"] = "something_else"
    response = client.chat.completions.create(
        model="gpt-4o", messages=judge_messages(OUT_A, OUT_B),
        response_format=fmt)
    assert json.loads(response.choices[0].message.content or "")["winner"] == "A"


def test_the_judge_is_set_and_cleared_over_http(emu: Emulator, client: openai.OpenAI) -> None:
    url = f"{emu.http_url}/__emu/judge"
    assert httpx.get(url).json() is None
    set_ = httpx.post(url, json={"quality": {sha(OUT_B).upper(): 2.0}, "tie_margin": 0.5})
    assert set_.status_code == 200
    assert set_.json()["quality"] == {sha(OUT_B): 2.0} and set_.json()["tie_margin"] == 0.5
    assert ask(client, OUT_A, OUT_B)["winner"] == "B"
    assert httpx.delete(url).json() == {"cleared": True}
    assert httpx.get(url).json() is None
    assert ask(client, OUT_A, OUT_B)["reason"] == "emulated"
    for bad in ({"noise": 1.0}, {"quality": {}, "position_bias": 2.0},
                {"quality": {}, "colour": "red"}, {"quality": ["x"]}):
        assert httpx.post(url, json=bad).status_code == 400


def test_bad_truths_are_refused(emu: Emulator) -> None:
    with pytest.raises(ValueError):
        emu.judge({}, noise=-1.0)
    with pytest.raises(ValueError):
        emu.judge({}, position_bias=1.5)
    with pytest.raises(ValueError):
        emu.judge({"ab": float("nan")})
