"""One decision per provider error: retry the same model, or move the chain on.

Rows are (provider, what the SDK raised) → the pixellab error and whether a retry can help.
"""

from __future__ import annotations

import fal_client
import httpx
import httpx2
import openai
import pytest
from replicate.exceptions import ReplicateError

from pixellab.errors import (
    ContentRejected,
    InvalidRequest,
    MissingCredentials,
    OutcomeUnknown,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExhausted,
    RateLimited,
)
from pixellab.providers import fal, replicate
from pixellab.providers import openai as openai_adapter


def fal_error(status: int, message: str = "x", headers: dict[str, str] | None = None,
              error_type: str | None = None) -> fal_client.FalClientHTTPError:
    response = httpx.Response(status, request=httpx.Request("POST", "https://queue.fal.run/a/b"))
    return fal_client.FalClientHTTPError(message, status, headers or {}, response, error_type)


def openai_error(cls: type[openai.APIStatusError], status: int, code: str | None = None,
                 headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx2.Response(status, headers=headers or {},
                               request=httpx2.Request("POST", "https://api.openai.com/v1/x"))
    error = cls("refused", response=response, body={"code": code})
    error.code = code
    return error


ROWS: list[tuple[str, BaseException, type[ProviderError], bool]] = [
    ("replicate", ReplicateError(status=429, detail="throttled"), RateLimited, True),
    ("replicate", ReplicateError(status=500), ProviderUnavailable, True),
    ("replicate", ReplicateError(status=503), ProviderUnavailable, True),
    ("replicate", ReplicateError(status=401), MissingCredentials, False),
    ("replicate", ReplicateError(status=422, detail="bad input"), InvalidRequest, False),
    ("replicate", ReplicateError(status=404), InvalidRequest, False),
    ("replicate", httpx.ReadTimeout("slow"), ProviderTimeout, True),
    ("replicate", httpx.ConnectError("refused"), ProviderUnavailable, True),
    ("fal", fal_error(429, headers={"Retry-After": "3"}), RateLimited, True),
    ("fal", fal_error(500), ProviderUnavailable, True),
    ("fal", fal_error(422, "prompt flagged", error_type="content_policy_violation"),
     ContentRejected, False),
    ("fal", fal_error(422, "field required"), InvalidRequest, False),
    ("fal", fal_error(403), MissingCredentials, False),
    ("fal", httpx.ReadTimeout("slow"), ProviderTimeout, True),
    ("openai", openai_error(openai.RateLimitError, 429, headers={"retry-after-ms": "1500"}),
     RateLimited, True),
    ("openai", openai_error(openai.InternalServerError, 500), ProviderUnavailable, True),
    ("openai", openai_error(openai.BadRequestError, 400, "moderation_blocked"),
     ContentRejected, False),
    ("openai", openai_error(openai.BadRequestError, 400, "invalid_value"), InvalidRequest, False),
    ("openai", openai_error(openai.AuthenticationError, 401), MissingCredentials, False),
]
MAPPERS = {"replicate": replicate.map_error, "fal": fal.map_error,
           "openai": openai_adapter.map_error}


@pytest.mark.parametrize(("provider", "raised", "expected", "retryable"), ROWS,
                         ids=[f"{r[0]}-{type(r[1]).__name__}-{i}" for i, r in enumerate(ROWS)])
def test_each_sdk_error_maps_to_one_decision(provider: str, raised: BaseException,
                                              expected: type[ProviderError],
                                              retryable: bool) -> None:
    mapped = MAPPERS[provider](raised, "m:x")
    assert (type(mapped), mapped.retryable) == (expected, retryable)


def test_retry_after_is_carried_from_the_headers() -> None:
    assert fal.map_error(fal_error(429, headers={"Retry-After": "3"})).retry_after == 3.0
    openai_429 = openai_error(openai.RateLimitError, 429, headers={"retry-after-ms": "1500"})
    assert openai_adapter.map_error(openai_429).retry_after == 1.5


# A job-creating call is different: the request reached the provider, and with no idempotency
# key a 5xx or a cut connection may follow a job that exists and bills. Those are
# OutcomeUnknown (never retried blind); what provably never left, or was refused, is not.
CREATE_ROWS: list[tuple[str, BaseException, type[ProviderError], bool]] = [
    ("replicate", ReplicateError(status=500), OutcomeUnknown, False),
    ("replicate", ReplicateError(status=503), OutcomeUnknown, False),
    ("replicate", httpx.RemoteProtocolError("server disconnected"), OutcomeUnknown, False),
    ("replicate", httpx.ReadTimeout("slow"), OutcomeUnknown, False),
    ("replicate", httpx.ConnectError("refused"), ProviderUnavailable, True),
    ("replicate", ReplicateError(status=429), RateLimited, True),
    ("replicate", ReplicateError(status=422), InvalidRequest, False),
    ("replicate", ReplicateError(status=402, detail="payment required"), QuotaExhausted, False),
    ("fal", httpx.ReadError("connection reset by peer"), OutcomeUnknown, False),
    ("fal", httpx.ConnectTimeout("no route"), ProviderUnavailable, True),
    ("openai", openai_error(openai.InternalServerError, 504), OutcomeUnknown, False),
    ("openai", openai_error(openai.InternalServerError, 500), OutcomeUnknown, False),
    ("openai", openai_error(openai.RateLimitError, 429, "insufficient_quota"),
     QuotaExhausted, False),
    ("openai", openai_error(openai.RateLimitError, 429, "rate_limit_exceeded"),
     RateLimited, True),
    ("openai", openai_error(openai.BadRequestError, 400, "moderation_blocked"),
     ContentRejected, False),
]


@pytest.mark.parametrize(("provider", "raised", "expected", "retryable"), CREATE_ROWS,
                         ids=[f"{r[0]}-{type(r[1]).__name__}-{i}"
                              for i, r in enumerate(CREATE_ROWS)])
def test_each_create_error_maps_to_one_decision(provider: str, raised: BaseException,
                                                 expected: type[ProviderError],
                                                 retryable: bool) -> None:
    mapped = MAPPERS[provider](raised, "m:x", creating=True)
    assert (type(mapped), mapped.retryable) == (expected, retryable)


def test_an_exhausted_openai_quota_is_not_a_rate_limit_even_on_a_poll() -> None:
    quota = openai_error(openai.RateLimitError, 429, "insufficient_quota")
    assert type(openai_adapter.map_error(quota)) is QuotaExhausted


def test_an_openai_refusal_at_the_output_stage_is_billed_as_a_rejection() -> None:
    response = httpx2.Response(400, request=httpx2.Request("POST", "https://api.openai.com/v1/x"))
    body = {"message": "blocked", "type": "image_generation_user_error",
            "code": "moderation_blocked", "param": None,
            "moderation_details": {"moderation_stage": "output"}}
    error = openai.BadRequestError("blocked", response=response, body=body)
    mapped = openai_adapter.map_error(error, creating=True)
    assert isinstance(mapped, ContentRejected)
    assert (mapped.stage, mapped.outcome) == ("output", "rejected")


def test_a_fal_refusal_is_read_from_its_typed_detail_not_its_words() -> None:
    detail = [{"loc": ["body", "image_url"], "msg": "Unprocessable image",
               "type": "content_policy_violation", "url": "https://docs.fal.ai/errors"}]
    assert isinstance(fal.map_error(fal_error(422, detail)), ContentRejected)  # type: ignore[arg-type]
    plain = [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]
    assert isinstance(fal.map_error(fal_error(422, plain)), InvalidRequest)  # type: ignore[arg-type]
    assert fal.error_types({"detail": detail}) == {"content_policy_violation"}
