"""A loopback emulator of the Replicate, fal and OpenAI APIs for the real, unmodified SDKs.

Why: pixellab's provider adapters, retry loop, billing ledger and output validation must be
tested against what the SDKs really do on the wire - polling, retries, file uploads, webhooks,
error mapping - without network access or money. Mocks of the SDKs would test our assumptions,
not the SDKs; this server speaks their protocols (``/work/shared/research/providers.md``) and
makes real images with pixellab's classical ops, so validation and scoring see real pixels.

Quick start::

    with Emulator(latency_s=0.02) as emu:
        client = replicate.Client(api_token="r8_test", base_url=emu.replicate_base_url)
        oai = openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key="sk-test")
        fal_client.client.QUEUE_URL_FORMAT = emu.fal_queue_url   # + RUN_URL_FORMAT, REST_URL,
        os.environ["SSL_CERT_FILE"] = emu.ca_pem                # CDN_URL; before the client

Any non-empty key is accepted (``Bearer`` for Replicate/OpenAI, ``Key`` for fal), absent auth
gets a 401. ``python -m pixellab.emulator`` serves one from a shell and prints ``emu.env()``.

Faults (``emu.faults.add(provider, action, model=None, times=1, **options)``) apply to the next
job-creating calls:

* ``rate_limit`` - 429 with ``Retry-After: <retry_after=0>`` and a provider-shaped body
  (OpenAI also ``retry-after-ms``); no job, not billed. fal-client retries 429 itself (10 tries).
* ``server_error`` - ``status`` (500); not billed. fal errors carry ``x-fal-request-id``.
* ``hang`` - holds the create for ``seconds`` (30), then 500; not billed.
* ``accept_then_hang`` - billed job that never finishes (Replicate ``processing``, fal
  ``IN_PROGRESS``; OpenAI holds the call ``seconds`` then 504). Cancel still works.
* ``job_failure`` - Replicate: billed, ``failed`` with ``error``; fal: billed, ``COMPLETED``
  with ``error`` and a 500 result GET; OpenAI: 500, not billed.
* ``content_rejected`` - Replicate: billed, failed "NSFW content detected..."; fal: billed,
  result GET 422 ``error_type: content_policy_violation``; OpenAI: 400 ``moderation_blocked``,
  not billed.
* ``corrupt`` / ``blank`` - the job succeeds but the output bytes are a truncated fake PNG / an
  all-black image of the normal size (fal also reports ``has_nsfw_concepts: [true]`` for blank;
  OpenAI chat: truncated JSON / empty content).
* ``drop_webhook`` / ``duplicate_webhook`` / ``delay_webhook`` - the terminal webhook is not
  sent / sent twice with the same id / sent ``seconds`` (1) late (Replicate and fal).
"""

from pixellab.emulator.context import RequestRecord
from pixellab.emulator.faults import ACTIONS, PROVIDERS, Fault, FaultPlan
from pixellab.emulator.jobs import MODEL_PRICES, OPERATION_PRICES, JobRecord
from pixellab.emulator.server import Emulator
from pixellab.emulator.webhooks import WebhookAttempt, WebhookDelivery, WebhookSink

__all__ = [
    "ACTIONS",
    "MODEL_PRICES",
    "OPERATION_PRICES",
    "PROVIDERS",
    "Emulator",
    "Fault",
    "FaultPlan",
    "JobRecord",
    "RequestRecord",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSink",
]
