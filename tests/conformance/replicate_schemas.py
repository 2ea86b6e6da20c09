"""Replicate response schemas, written from:

* replicate/replicate-python-beta @ 48e138a15eeb44be36d871ad822b5e86d3852db3 (2.0.0-beta.4,
  "generated from our OpenAPI spec by Stainless"): ``src/replicate/types/prediction.py``
  (``Prediction``, ``URLs``, ``Metrics``), ``src/replicate/types/file_create_response.py``,
  ``file_get_response.py``, ``file_list_response.py``;
* replicate/replicate-python @ 0110c2c5639763a44e73d69011eaec28a15334f7, ``tests/cassettes``
  (recorded real responses): ``file-operations.yaml`` (files add ``name`` and ``etag`` to the
  generated type, ``checksums`` has ``sha256`` and ``md5``, ``urls.get`` is
  ``https://api.replicate.com/v1/files/<id>``, ``expires_at`` is creation + 24 h),
  ``run__invalid-token.yaml`` (errors are ``application/problem+json``
  ``{"title", "detail", "status"}``), ``predictions-*.yaml`` (list pages
  ``{"next", "previous", "results"}``, versions ``{id, created_at, cog_version,
  openapi_schema}``);
* nodetool-ai/nodetool issue #5196 (a real 429 body carries ``retry_after``).

A prediction is closed to the generated type's fields; ``metrics`` is open (the type declares
extra properties), which is where ``image_count`` lives.
"""

from __future__ import annotations

from tests.conformance.support import (
    ANY,
    BOOLEAN,
    INTEGER,
    NUMBER,
    STRING,
    TIMESTAMP,
    URL,
    Schema,
    closed,
    nullable,
    opened,
)

SOURCE = ("replicate/replicate-python-beta@48e138a15eeb44be36d871ad822b5e86d3852db3 "
          "src/replicate/types/prediction.py, file_*_response.py; "
          "replicate/replicate-python@0110c2c5639763a44e73d69011eaec28a15334f7 tests/cassettes")

PREDICTION_URLS: Schema = closed({"cancel": URL, "get": URL, "web": URL, "stream": URL},
                                 ["cancel", "get", "web"])

METRICS: Schema = opened({"total_time": NUMBER, "predict_time": NUMBER,
                          "image_count": INTEGER})

PREDICTION: Schema = closed({
    "id": STRING,
    "created_at": TIMESTAMP,
    "data_removed": BOOLEAN,
    "error": nullable(STRING),
    "input": {"type": "object"},
    "model": STRING,
    "output": ANY,
    "status": {"enum": ["starting", "processing", "succeeded", "failed", "canceled"]},
    "urls": PREDICTION_URLS,
    "version": STRING,  # a version id, or "hidden" for official models
    "completed_at": nullable(TIMESTAMP),
    "deadline": nullable(TIMESTAMP),
    "deployment": nullable(STRING),
    "logs": nullable(STRING),
    "metrics": nullable(METRICS),
    "started_at": nullable(TIMESTAMP),
}, ["id", "created_at", "data_removed", "input", "model", "output", "status", "urls",
    "version"])

PREDICTION_LIST: Schema = closed({"next": nullable(URL), "previous": nullable(URL),
                                  "results": {"type": "array", "items": PREDICTION}},
                                 ["results"])

FILE: Schema = closed({
    "id": STRING,
    "name": STRING,
    "content_type": STRING,
    "size": INTEGER,
    "etag": STRING,
    "checksums": closed({"sha256": STRING, "md5": STRING}, ["sha256"]),
    "metadata": ANY,
    "created_at": TIMESTAMP,
    "expires_at": TIMESTAMP,
    "urls": closed({"get": URL}, ["get"]),
}, ["id", "name", "content_type", "size", "etag", "checksums", "metadata", "created_at",
    "expires_at", "urls"])

FILE_LIST: Schema = closed({"next": nullable(URL), "previous": nullable(URL),
                            "results": {"type": "array", "items": FILE}}, ["results"])

PROBLEM: Schema = closed({"type": STRING, "title": STRING, "detail": STRING,
                          "status": INTEGER, "instance": STRING, "retry_after": NUMBER},
                         ["title", "detail", "status"])
"""RFC 7807 problem details as Replicate sends them (the SDK's ``ReplicateError`` fields)."""

VERSION: Schema = opened({"id": STRING, "created_at": TIMESTAMP, "cog_version": STRING,
                          "openapi_schema": {"type": "object"}},
                         ["id", "created_at", "cog_version", "openapi_schema"])

MODEL: Schema = opened({"url": URL, "owner": STRING, "name": STRING,
                        "latest_version": nullable(VERSION)}, ["owner", "name"])

WEBHOOK_SECRET: Schema = closed({"key": {"type": "string", "pattern": "^whsec_"}}, ["key"])
