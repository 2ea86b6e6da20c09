"""``pixellab serve``: the routing table as a job service, the way an application calls it.

The seed's product runs a job queue: a client submits a photo, gets a ``pending`` job, the
backend dispatches it to a provider, and the client polls (every 3 s) or is called back. This
module is that backend over the workbench: each job runs through
:func:`~pixellab.routing.generate` (the routed chain, fallbacks, validation, the ledger, the
store, the spend policy's caps), and what the service itself must remember (keys, wallets,
jobs) is in :class:`~pixellab.ledger.jobs.JobBook`.

API (OpenAPI at ``/openapi.json``; ``Authorization: Bearer <key>`` on every ``/v1/jobs`` call):

- ``POST /v1/jobs`` (multipart form: ``task``, ``image`` file or ``image_url``, optional
  ``category``, ``callback_url``; optional ``Idempotency-Key`` header) → ``202 {id, status:
  "pending"}``. The wallet is debited by the routed chain's credit estimate first (``402``
  when it holds less); the same idempotency key returns the same job, never a second paid one.
  ``image_url`` is fetched through the safe fetcher (no private addresses unless allowed), and
  a ``callback_url`` is vetted the same way.
- ``GET /v1/jobs/{id}`` → status, attempts, model, output URL, cost (USD) and credits.
- ``GET /v1/jobs/{id}/output`` → the output's bytes once it succeeded.
- ``DELETE /v1/jobs/{id}`` cancels a pending job (its credits go back).
- ``GET /v1/health`` → job counts (no key needed).

Per-key rate limits use ``limits`` (a moving window, in memory: one service process holds
them); a request over the limit gets ``429`` with ``Retry-After``. A key sees only its own
jobs (another key's job is ``404``, not ``403``: ids are not confirmed to strangers).

Jobs survive a restart: ``running`` jobs are pending again at start and rerun through
``generate``, whose request key (one per job) finds what the ledger already has: a finished
attempt is reused and an in-flight one is polled, never created again. When a job ends, its
``callback_url`` gets the job as JSON, signed with Standard Webhooks (the secret from
``$PIXELLAB_CALLBACK_SECRET``), retried with backoff.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from PIL import Image
from pydantic import BaseModel

from pixellab.alerts import WebhookTarget, post_signed
from pixellab.errors import ConfigError, FetchRefused, InvalidImage, PixellabError
from pixellab.intel.fetch import FetchPolicy, fetch_async, vet_url
from pixellab.ledger import queries
from pixellab.ledger.jobs import ApiKey, InsufficientCredits, Job, JobBook
from pixellab.media import EXTENSIONS
from pixellab.routing import generate, route
from pixellab.tasks import Task
from pixellab.validate import check_input_blank, decode_image
from pixellab.workbench import Workbench

T = TypeVar("T")
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
CALLBACK_SECRET_ENV = "PIXELLAB_CALLBACK_SECRET"
IMAGE_TASKS = tuple(t.value for t in Task if t not in (Task.ANALYZE, Task.JUDGE))


class JobView(BaseModel):
    """A job as a client sees it."""

    id: str
    status: str
    task: str
    category: str | None
    attempts: int
    model_id: str | None
    output_url: str | None
    cost_usd: str | None
    credits: float | None
    reserved_credits: float
    error: str | None
    callback_status: str | None
    created_at: float
    updated_at: float


class Accepted(BaseModel):
    id: str
    status: str


def view(job: Job) -> JobView:
    return JobView(id=job.id, status=job.status, task=job.task, category=job.category,
                   attempts=job.attempts, model_id=job.model_id,
                   output_url=f"/v1/jobs/{job.id}/output" if job.output_sha256 else None,
                   cost_usd=job.usd, credits=job.credits, reserved_credits=job.reserved_credits,
                   error=job.error, callback_status=job.callback_status,
                   created_at=job.created_at, updated_at=job.updated_at)


@dataclass
class ServiceConfig:
    workers: int = 4
    rate: str = "120/minute"
    """Per key, in ``limits``' notation (``"10/second"``, ``"120/minute"``)."""
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    poll_interval_s: float = 0.2


class Service:
    """The job store, the workers and the limiter around one workbench."""

    def __init__(self, workbench: Workbench, config: ServiceConfig | None = None) -> None:
        self.workbench = workbench
        self.config = config or ServiceConfig()
        self.book = JobBook(workbench.home / "jobs.sqlite")
        self.limit: RateLimitItem = parse(self.config.rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.book.requeue_running)
        # Jobs get threads of their own: on the default executor, long jobs held the threads
        # that requests' short book lookups need (polls' p50 1.8 s with 16 jobs running;
        # 83 ms with their own pool, tests/test_serve.py's load test on 2 cores).
        self._jobs = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, self.config.workers), thread_name_prefix="pixellab-job")
        self._tasks = [asyncio.create_task(self._worker(), name=f"pixellab-job-worker-{i}")
                       for i in range(max(1, self.config.workers))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._jobs is not None:
            self._jobs.shutdown(wait=False, cancel_futures=True)

    async def _in_job_thread(self, function: Callable[..., T], *args: Any) -> T:
        assert self._jobs is not None, "start() first"
        return await asyncio.get_running_loop().run_in_executor(self._jobs, function, *args)

    async def _worker(self) -> None:
        while True:
            job = await asyncio.to_thread(self.book.claim)
            if job is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_interval_s)
                continue
            finished = await self._in_job_thread(self._run, job)
            if finished is not None and finished.callback_url:
                await self._in_job_thread(self._call_back, finished)

    def _run(self, job: Job) -> Job | None:
        """One job through ``generate``, in a worker thread (the ledger's calls block)."""
        path = self.workbench.store.path_for(job.input_sha256, job.input_media_type)
        try:
            done = generate(path, job.task, category=job.category, workbench=self.workbench,
                            params=job.params, product_id=job.id)
        except PixellabError as exc:
            return self.book.finish(job.id, status="failed", credits=0, usd=None,
                                    model_id=None, request_key=None, output_sha256=None,
                                    output_media_type=None, error=str(exc)[:500])
        usd, credits = queries.request_cost(self.workbench.ledger, done.request_key)
        outcome = done.outcome
        media_type = (queries.output_media_type(self.workbench.ledger, outcome.output_sha256)
                      if outcome.output_sha256 else None)
        return self.book.finish(
            job.id, status="succeeded" if done.succeeded else "failed", credits=float(credits),
            usd=f"{usd:.6f}", model_id=outcome.model_id, request_key=done.request_key,
            output_sha256=outcome.output_sha256 if done.succeeded else None,
            output_media_type=media_type,
            error=None if done.succeeded else
            f"{outcome.error_class}: {outcome.error_message}"[:500])

    def _call_back(self, job: Job) -> None:
        assert job.callback_url is not None
        delivery = post_signed(WebhookTarget(job.callback_url, CALLBACK_SECRET_ENV),
                               f"{job.id}:{job.status}", view(job).model_dump())
        self.book.set_callback_status(job.id, f"{'delivered' if delivery.ok else 'failed'}: "
                                              f"{delivery.detail} after {delivery.attempts}")

    # -- requests ---------------------------------------------------------------------------

    def estimate_credits(self, task: str, category: str | None, megapixels: float) -> float:
        """The credits a job may cost: each model of its routed chain tried once."""
        chosen = route(category, task, routes=self.workbench.routes_path,
                       catalog=self.workbench.catalog)
        return sum(model.estimate_credits(megapixels=megapixels) for model in chosen.chain)

    async def own_job(self, key: ApiKey, job_id: str,
                      lookup: Callable[[str, str], Job | None]) -> Job:
        """``lookup(job_id, key_id)`` for a rate-limited caller, or 404 (another key's job
        is not confirmed to exist)."""
        self.throttle(key)
        job = await asyncio.to_thread(lookup, job_id, key.id)
        if job is None:
            raise HTTPException(404, "no such job")
        return job

    def throttle(self, key: ApiKey) -> None:
        if not self.limiter.hit(self.limit, key.id):
            reset = self.limiter.get_window_stats(self.limit, key.id).reset_time
            raise HTTPException(429, f"rate limit {self.config.rate} for this key",
                                headers={"Retry-After": str(max(1, int(reset - time.time())))})


def _accepted(job: Job, *, new: bool) -> JSONResponse:
    """``202 {id, status}``; a job an Idempotency-Key already made says it is a replay."""
    return JSONResponse(Accepted(id=job.id, status=job.status).model_dump(), status_code=202,
                        headers=None if new else {"Idempotent-Replayed": "true"})


_bearer = HTTPBearer(auto_error=False)


async def _caller(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> ApiKey:
    """The API key a request carries, or 401."""
    if credentials is None or not credentials.credentials:
        raise HTTPException(401, "an API key is needed: Authorization: Bearer <key>",
                            headers={"WWW-Authenticate": "Bearer"})
    service: Service = request.app.state.service
    key = await asyncio.to_thread(service.book.authenticate, credentials.credentials)
    if key is None:
        raise HTTPException(401, "unknown or revoked API key",
                            headers={"WWW-Authenticate": "Bearer"})
    return key


Caller = Annotated[ApiKey, Depends(_caller)]


def create_app(workbench: Workbench, config: ServiceConfig | None = None) -> FastAPI:
    service = Service(workbench, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="pixellab job service", version="1",
                  description=(__doc__ or "").split("\n\n")[0], lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(PixellabError)
    async def pixellab_error(request: Request, exc: PixellabError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)[:500]}, status_code=422)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "jobs": await asyncio.to_thread(service.book.counts)}

    @app.post("/v1/jobs", status_code=202, response_model=Accepted,
              responses={402: {"description": "the wallet holds less than the estimate"},
                         429: {"description": "rate limited"}})
    async def submit(key: Caller, task: Annotated[str, Form()],
                     image: Annotated[UploadFile | None, File()] = None,
                     image_url: Annotated[str | None, Form(max_length=2048)] = None,
                     category: Annotated[str | None, Form(max_length=64)] = None,
                     callback_url: Annotated[str | None, Form(max_length=2048)] = None,
                     idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
                     ) -> JSONResponse:
        service.throttle(key)
        if task not in IMAGE_TASKS:
            raise HTTPException(422, f"task must be one of {', '.join(IMAGE_TASKS)}")
        if idempotency_key is not None:  # a replay: answer before fetching anything
            known = await asyncio.to_thread(service.book.submit_known, key.id,
                                            idempotency_key)
            if known is not None:
                return _accepted(known, new=False)
        if (image is None) == (not image_url):
            raise HTTPException(422, "give exactly one of image (a file) or image_url")
        if image is not None:
            data = await image.read(MAX_UPLOAD_BYTES + 1)
            if len(data) > MAX_UPLOAD_BYTES:
                raise HTTPException(413, f"image over {MAX_UPLOAD_BYTES // 2**20} MiB")
        else:
            assert image_url is not None
            try:
                data = (await fetch_async(image_url, service.config.fetch, kind="image")).body
            except FetchRefused as exc:
                raise HTTPException(422, str(exc)) from None
        if callback_url:
            try:
                await vet_url(callback_url, service.config.fetch)
            except FetchRefused as exc:
                raise HTTPException(422, f"callback_url: {exc}") from None
        try:
            photo = await asyncio.to_thread(decode_image, data)
            check_input_blank(photo, "image")
        except InvalidImage as exc:
            raise HTTPException(422, str(exc)) from None
        media_type = Image.MIME.get(photo.format or "", "image/png")
        if media_type not in EXTENSIONS:
            raise HTTPException(422, f"{media_type} images are not accepted")
        megapixels = photo.size[0] * photo.size[1] / 1e6
        try:
            estimate = service.estimate_credits(task, category, megapixels)
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        sha = await asyncio.to_thread(workbench.store.put, data, media_type)
        try:
            job, new = await asyncio.to_thread(
                service.book.submit, key_id=key.id, idempotency_key=idempotency_key,
                task=task, category=category, input_sha256=sha, input_media_type=media_type,
                params={}, callback_url=callback_url or None, estimate_credits=estimate)
        except InsufficientCredits as exc:
            raise HTTPException(402, str(exc)) from None
        service._wake.set()
        return _accepted(job, new=new)

    @app.get("/v1/jobs/{job_id}", response_model=JobView,
             responses={404: {"description": "no such job for this key"}})
    async def status(key: Caller, job_id: str) -> JobView:
        return view(await service.own_job(key, job_id, service.book.get))

    @app.get("/v1/jobs/{job_id}/output",
             responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {},
                                          "video/mp4": {}}},
                        404: {"description": "no such job"},
                        409: {"description": "the job has no output (yet)"}})
    async def output(key: Caller, job_id: str) -> Response:
        job = await service.own_job(key, job_id, service.book.get)
        if job.output_sha256 is None or job.output_media_type is None:
            raise HTTPException(409, f"the job is {job.status}: no output")
        data = await asyncio.to_thread(workbench.store.get, job.output_sha256,
                                       job.output_media_type)
        return Response(data, media_type=job.output_media_type)

    @app.delete("/v1/jobs/{job_id}", response_model=JobView,
                responses={404: {"description": "no such job"}})
    async def cancel(key: Caller, job_id: str) -> JobView:
        return view(await service.own_job(key, job_id, service.book.cancel))

    return app


def serve(workbench: Workbench, *, host: str = "127.0.0.1", port: int = 8080,
          config: ServiceConfig | None = None) -> None:
    """Run the service with uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    uvicorn.run(create_app(workbench, config), host=host, port=port, log_level="warning",
                access_log=False)

