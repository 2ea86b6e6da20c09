"""fal response schemas, written from:

* fal-ai/fal @ c6f0afaaceec981d2461474a81467552adb0b084,
  ``projects/fal_client/src/fal_client/client.py``: what fal-client requires of each answer -
  submit: ``request_id``, ``response_url``, ``status_url``, ``cancel_url``
  (``AsyncClient.submit``); status: ``IN_QUEUE`` with ``queue_position``, ``IN_PROGRESS`` with
  ``logs``, ``COMPLETED`` with ``logs`` and optional ``metrics``/``error``/``error_type``
  (``_BaseRequestHandle._parse_status``); errors: ``detail`` and ``error_type`` or the
  ``x-fal-error-type`` header (``_raise_for_status``); CDN token ``token``, ``token_type``,
  ``base_url``, ``expires_at`` and upload ``access_url`` (``CDNTokenManager``, ``_upload_v3``);
* fal's docs: model errors https://docs.fal.ai/documentation/model-apis/errors (``detail`` is an
  array of error objects with ``loc``, ``msg``, ``type`` required and ``url``, ``ctx``,
  ``input`` optional; header ``X-Fal-Retryable``); request errors
  https://docs.fal.ai/documentation/model-apis/request-errors (a flat ``{"detail": "<text>",
  "error_type": "<type>"}`` plus ``X-Fal-Error-Type``); webhooks
  https://docs.fal.ai/model-endpoints/webhooks (``request_id``, ``gateway_request_id``,
  ``status`` ``OK``/``ERROR``, ``payload``, ``error``, ``payload_error``).

fal publishes no closed schema for queue answers, so those are open objects with the required
keys; the error objects, whose fields the docs enumerate, are closed (``categories`` appears in
content-policy errors as fal's docs show them).
"""

from __future__ import annotations

from tests.conformance.support import (
    ANY,
    INTEGER,
    STRING,
    TIMESTAMP,
    URL,
    Schema,
    closed,
    nullable,
    opened,
)

SOURCE = ("fal-ai/fal@c6f0afaaceec981d2461474a81467552adb0b084 "
          "projects/fal_client/src/fal_client/client.py; docs.fal.ai model-apis/errors, "
          "model-apis/request-errors, model-endpoints/webhooks")

LOGS: Schema = nullable({"type": "array", "items": opened(
    {"message": STRING, "level": STRING, "source": STRING, "timestamp": TIMESTAMP},
    ["message"])})

SUBMIT: Schema = opened({"status": {"const": "IN_QUEUE"}, "request_id": STRING,
                         "response_url": URL, "status_url": URL, "cancel_url": URL,
                         "queue_position": {"type": "integer", "minimum": 0},
                         "gateway_request_id": STRING},
                        ["request_id", "response_url", "status_url", "cancel_url"])

STATUS_IN_QUEUE: Schema = opened({"status": {"const": "IN_QUEUE"},
                                  "queue_position": {"type": "integer", "minimum": 0}},
                                 ["status", "queue_position"])
STATUS_IN_PROGRESS: Schema = opened({"status": {"const": "IN_PROGRESS"}, "logs": LOGS},
                                    ["status", "logs"])
STATUS_COMPLETED: Schema = opened({"status": {"const": "COMPLETED"}, "logs": LOGS,
                                   "metrics": {"type": "object"},
                                   "error": nullable(STRING),
                                   "error_type": nullable(STRING)}, ["status", "logs"])
STATUS: Schema = {"oneOf": [STATUS_IN_QUEUE, STATUS_IN_PROGRESS, STATUS_COMPLETED]}

IMAGE: Schema = opened({"url": URL, "width": INTEGER, "height": INTEGER,
                        "content_type": STRING}, ["url"])
IMAGE_RESULT: Schema = opened({"images": {"type": "array", "items": IMAGE}, "seed": INTEGER,
                               "has_nsfw_concepts": {"type": "array",
                                                     "items": {"type": "boolean"}},
                               "timings": {"type": "object"}}, ["images"])

MODEL_ERROR_OBJECT: Schema = closed({
    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
    "msg": STRING,
    "type": STRING,
    "url": URL,
    "ctx": {"type": "object"},
    "input": ANY,
    "categories": {"type": "array", "items": STRING},
}, ["loc", "msg", "type"])
MODEL_ERROR: Schema = closed({"detail": {"type": "array", "items": MODEL_ERROR_OBJECT,
                                         "minItems": 1}}, ["detail"])

DOCUMENTED_REQUEST_ERROR_TYPES = {"request_timeout": 504, "startup_timeout": 504,
                                  "runner_scheduling_failure": 503,
                                  "runner_connection_timeout": 503, "runner_disconnected": 503}
"""Some of the request-error types the docs tabulate, with their typical status."""

REQUEST_ERROR: Schema = closed({"detail": STRING, "error_type": STRING},
                               ["detail", "error_type"])

PLAIN_ERROR: Schema = closed({"detail": STRING}, ["detail"])
"""An error with a text ``detail`` and no type (auth, not found, a model's own failure)."""

CANCEL_ACCEPTED: Schema = closed({"status": {"const": "CANCELLATION_REQUESTED"}}, ["status"])
CANCEL_REFUSED: Schema = closed({"status": {"const": "ALREADY_COMPLETED"}}, ["status"])

CDN_TOKEN: Schema = opened({"token": STRING, "token_type": STRING, "base_url": URL,
                            "expires_at": TIMESTAMP},
                           ["token", "token_type", "base_url", "expires_at"])
CDN_UPLOAD: Schema = opened({"access_url": URL}, ["access_url"])
UPLOAD_INITIATE: Schema = opened({"upload_url": URL, "file_url": URL},
                                 ["upload_url", "file_url"])
JWKS: Schema = closed({"keys": {"type": "array", "minItems": 1, "items": opened(
    {"kty": {"const": "OKP"}, "crv": {"const": "Ed25519"}, "x": STRING, "kid": STRING},
    ["kty", "crv", "x"])}}, ["keys"])

WEBHOOK: Schema = closed({
    "request_id": STRING,
    "gateway_request_id": STRING,
    "status": {"enum": ["OK", "ERROR"]},
    "payload": ANY,
    "error": STRING,
    "payload_error": STRING,
}, ["request_id", "status", "payload"])
