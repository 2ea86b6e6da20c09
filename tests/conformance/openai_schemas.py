"""OpenAI response schemas, written from openai/openai-openapi @
f85dbe223d40e1a31cba812ab2d755c7e98a92a3, ``openapi.yaml``, components ``ImagesResponse``,
``Image``, ``ImageGenUsage`` (+ ``ImageGenInputUsageDetails``, ``ImageGenOutputTokensDetails``),
``CreateChatCompletionResponse``, ``ChatCompletionResponseMessage``, ``CompletionUsage``,
``ErrorResponse`` and ``Error``.

Objects are closed to the properties the spec lists (the spec enumerates them; a field it does
not list is one the real API does not send). One addition: the error object may carry
``moderation_details`` (``moderation_stage`` input/output/unknown, ``categories``), which
``openapi.yaml`` at that commit does not list but OpenAI's SDKs generated from later specs do
(the ``ImageGenerationCall::Error`` model of the openai Ruby gem:
``code, message, param, type, moderation_details``).
"""

from __future__ import annotations

from tests.conformance.support import (
    INTEGER,
    STRING,
    URL,
    Schema,
    closed,
    nullable,
)

SOURCE = ("openai/openai-openapi@f85dbe223d40e1a31cba812ab2d755c7e98a92a3 openapi.yaml "
          "(ImagesResponse, ImageGenUsage, CreateChatCompletionResponse, ErrorResponse)")

IMAGE: Schema = closed({"b64_json": STRING, "url": URL, "revised_prompt": STRING})

IMAGE_GEN_USAGE: Schema = closed({
    "input_tokens": INTEGER,
    "total_tokens": INTEGER,
    "output_tokens": INTEGER,
    "output_tokens_details": closed({"image_tokens": INTEGER, "text_tokens": INTEGER},
                                    ["image_tokens", "text_tokens"]),
    "input_tokens_details": closed({"text_tokens": INTEGER, "image_tokens": INTEGER},
                                   ["text_tokens", "image_tokens"]),
}, ["input_tokens", "total_tokens", "output_tokens", "input_tokens_details"])

IMAGES_RESPONSE: Schema = closed({
    "created": INTEGER,
    "data": {"type": "array", "items": IMAGE},
    "background": {"enum": ["transparent", "opaque"]},
    "output_format": {"enum": ["png", "webp", "jpeg"]},
    "size": {"enum": ["1024x1024", "1024x1536", "1536x1024"]},
    "quality": {"enum": ["low", "medium", "high"]},
    "usage": IMAGE_GEN_USAGE,
}, ["created"])

GPT_IMAGE_RESPONSE: Schema = {"allOf": [IMAGES_RESPONSE, {
    "required": ["created", "data", "usage"],
    "properties": {"data": {"items": {"required": ["b64_json"]}}}}]}
"""What a GPT image model answers: ``b64_json`` images ("returned by default for the GPT image
models"; ``url`` is "unsupported for the GPT image models") and token ``usage``."""

ANNOTATION: Schema = closed({
    "type": {"const": "url_citation"},
    "url_citation": closed({"end_index": INTEGER, "start_index": INTEGER, "url": URL,
                            "title": STRING}, ["end_index", "start_index", "url", "title"]),
}, ["type", "url_citation"])

CHAT_MESSAGE: Schema = closed({
    "content": nullable(STRING),
    "refusal": nullable(STRING),
    "tool_calls": {"type": "array"},
    "annotations": {"type": "array", "items": ANNOTATION},
    "role": {"const": "assistant"},
    "function_call": {"type": "object"},
    "audio": nullable({"type": "object"}),
}, ["role", "content", "refusal"])

LOGPROBS: Schema = nullable(closed({"content": nullable({"type": "array"}),
                                    "refusal": nullable({"type": "array"})},
                                   ["content", "refusal"]))

COMPLETION_USAGE: Schema = closed({
    "completion_tokens": INTEGER,
    "prompt_tokens": INTEGER,
    "total_tokens": INTEGER,
    "completion_tokens_details": closed({
        "accepted_prediction_tokens": INTEGER, "audio_tokens": INTEGER,
        "reasoning_tokens": INTEGER, "text_tokens": INTEGER,
        "rejected_prediction_tokens": INTEGER}),
    "prompt_tokens_details": closed({
        "audio_tokens": INTEGER, "cached_tokens": INTEGER, "text_tokens": INTEGER,
        "image_tokens": INTEGER, "cache_write_tokens": INTEGER}),
}, ["prompt_tokens", "completion_tokens", "total_tokens"])

CHAT_COMPLETION: Schema = closed({
    "id": STRING,
    "choices": {"type": "array", "items": closed({
        "finish_reason": {"enum": ["stop", "length", "tool_calls", "content_filter",
                                   "function_call"]},
        "index": INTEGER,
        "message": CHAT_MESSAGE,
        "logprobs": LOGPROBS,
    }, ["finish_reason", "index", "message", "logprobs"])},
    "created": INTEGER,
    "model": STRING,
    "metadata": nullable({"type": "object"}),
    "service_tier": nullable(STRING),
    "system_fingerprint": STRING,
    "object": {"const": "chat.completion"},
    "usage": COMPLETION_USAGE,
    "moderation": nullable({"type": "object"}),
}, ["choices", "created", "id", "model", "object"])

MODERATION_DETAILS: Schema = closed({
    "moderation_stage": {"enum": ["input", "output", "unknown"]},
    "categories": {"type": "array", "items": STRING},
}, ["moderation_stage", "categories"])

ERROR: Schema = closed({
    "code": nullable(STRING),
    "message": STRING,
    "param": nullable(STRING),
    "type": STRING,
    "moderation_details": MODERATION_DETAILS,
}, ["type", "message", "param", "code"])

ERROR_RESPONSE: Schema = closed({"error": ERROR}, ["error"])
