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
job-creating calls. "Refused" means no job is created and nothing is billed; an accepted job is
billed when it ends by the provider's published rule for its outcome
(:mod:`pixellab.emulator.billing`; ``emu.bill()`` totals it, ``emu.creates()`` lists the jobs):

* ``rate_limit`` - refused: 429 with ``Retry-After: <retry_after=0>`` and a provider-shaped body
  (OpenAI also ``retry-after-ms``). fal-client retries 429 itself (10 tries).
* ``server_error`` - refused: ``status`` (500). fal errors carry ``x-fal-request-id``.
* ``hang`` - refused: holds the create for ``seconds`` (30), then 500.
* ``insufficient_quota`` - refused, out of credit: OpenAI 429 ``insufficient_quota``
  (type and code); Replicate 402 problem+json; fal 403 "User is locked. Reason: Exhausted
  balance..." (the two last as reported in public issues; neither publishes a shape).
* ``accept_then_hang`` - accepted job that never finishes (Replicate ``processing``, fal
  ``IN_PROGRESS``; OpenAI holds the call ``seconds`` then 504, the job ends failed). Cancel
  still works.
* ``accept_then_reset`` - the create is accepted (job created; OpenAI and fal sync runs: run to
  completion and billed) and then the TCP connection is reset without any HTTP response (an
  RST, over TLS too): clients see a transport error (``RemoteProtocolError``/``ReadError``).
  fal-client retries a submit after it, creating a second job.
* ``accept_then_error`` - like ``accept_then_reset`` but the create answers ``status`` (504)
  in the provider's error shape (fal: with ``x-fal-request-id``, or with ``ingress=True`` an
  nginx page, which fal-client retries).
* ``job_failure`` - accepted, then fails: Replicate ``failed`` with ``error``; fal ``COMPLETED``
  with ``error`` and a 500 result GET; OpenAI 500.
* ``content_rejected`` - accepted, then refused by a content check: Replicate failed "NSFW
  content detected..."; fal result GET 422 with ``detail[].type: content_policy_violation``
  (billed: the runner had run);
  OpenAI 400 ``moderation_blocked`` with ``moderation_details.moderation_stage`` =
  ``stage``: ``input`` (default; refused, no job) or ``output`` (the job ran; not billed unless
  ``billed=True``).
* ``runner_failure`` (fal) - the first ``attempts`` (1) runners of a queued job die (503): fal
  retries it on a new runner (up to 10 attempts) unless the submit sent ``x-fal-no-retry``;
  then, or on a sync run, the job fails with 503 ``runner_disconnected``. Not billed.
* ``corrupt`` / ``blank`` - the job succeeds but the output bytes are a truncated fake PNG / an
  all-black image of the normal size (fal also reports ``has_nsfw_concepts: [true]`` for blank;
  OpenAI chat: truncated JSON / empty content; a video: an MP4 cut in half / an all-black
  clip).
* ``frozen`` / ``wrong_duration`` / ``wrong_aspect`` (video jobs; no effect on others) - the
  job succeeds, bills the clip asked for, and answers a clip that repeats its first frame /
  lasts half the asked duration / has width and height swapped (a square clip: 16:9).
* ``identity_drift`` (image jobs; no effect on others) - the job succeeds, bills as usual, and
  answers a valid image of the normal size and framing showing a *different* product: recoloured
  (hue rotated by ``hue`` = 150 degrees, greys tinted), mirrored in place (``mirror``) and with
  its label blurred and redrawn (``label``) (:mod:`pixellab.emulator.drift`). Every validity
  check passes; only a product-identity check can catch it.
* ``drop_webhook`` / ``duplicate_webhook`` / ``delay_webhook`` - the terminal webhook is not
  sent / sent twice with the same id / sent ``seconds`` (1) late (Replicate and fal).
* ``reply`` (OpenAI chat) - the completion answers ``content`` verbatim.

Video models (Replicate ``kwaivgi/kling-v1.6-standard`` and ``google/veo-3.1``, fal Kling 1.6
and Veo 3.1 image-to-video, OpenAI ``sora-2`` through ``POST /v1/videos``; any model whose name
says ``video``, ``kling``, ``veo`` or ``sora``) answer a real H.264 MP4 made from the input photo,
of the asked duration, aspect ratio and resolution, after ``video_latency_s``
(:mod:`pixellab.emulator.video`); they bill the asked seconds at the model's per-second price.
On them ``content_rejected`` is Replicate's failed "NSFW" prediction, fal's 422
``content_policy_violation`` (billed) and OpenAI's ``failed`` video with ``error.code``
``moderation_blocked`` (``stage="output"``; the default ``input`` refuses the create);
``job_failure`` a failed prediction / fal 500 / a ``failed`` video; ``accept_then_hang`` on
Sora keeps the video ``in_progress`` for ``seconds`` (30), then fails it.

``emu.on_create(callback)`` calls ``callback(JobRecord)`` on the emulator's loop thread for each
accepted job-creating call before its response is written (e.g. to SIGKILL a client exactly
there). ``Emulator(record_bodies=True)`` keeps every answer in ``emu.responses``.
"""

from pixellab.emulator.billing import BILLING_RULES, MODEL_PRICES, OPERATION_PRICES, Price
from pixellab.emulator.context import RequestRecord, ResponseRecord
from pixellab.emulator.faults import ACTIONS, PROVIDERS, Fault, FaultPlan
from pixellab.emulator.jobs import JobRecord
from pixellab.emulator.server import Emulator
from pixellab.emulator.webhooks import WebhookAttempt, WebhookDelivery, WebhookSink

__all__ = [
    "ACTIONS",
    "BILLING_RULES",
    "MODEL_PRICES",
    "OPERATION_PRICES",
    "PROVIDERS",
    "Emulator",
    "Fault",
    "FaultPlan",
    "JobRecord",
    "Price",
    "RequestRecord",
    "ResponseRecord",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSink",
]
