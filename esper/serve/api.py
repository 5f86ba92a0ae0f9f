"""The FastAPI application of the served Tamiyo: routes, error shapes, bearer auth and the body-size limit.

The app talks to a `Backend` (the Serve replica, or a plain in-process one in tests), so the same routes and
guarantees hold wherever it runs. Every client mistake is a 4xx with an `ErrorOut` body; nothing a client
sends can raise past the handlers.
"""

from __future__ import annotations

import hmac
import json
import math
from typing import Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from esper.serve.domains import ServedDomains, domain_of
from esper.serve.policy import BadObservation, Choice, ServedPolicy
from esper.serve.schemas import (ActionOut, BatchOut, DecideBatchRequest, DecideRequest, DecisionOut, ErrorOut,
                                 ObservationIn)

OPEN_PATHS = frozenset({"/healthz"})  # answered without a token (liveness probes)


class Backend(Protocol):
    domains: ServedDomains

    async def decide_one(self, policy: ServedPolicy, row: tuple[np.ndarray, np.ndarray, bool, int | None]) -> Choice: ...


def _error(status: int, message: str, detail: list[dict] | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(ErrorOut(error=message, detail=detail).model_dump(exclude_none=True), status, headers=headers)


class Guard:
    """Pure ASGI middleware: bearer token (when configured) and a request-body limit (413), before any parsing."""

    def __init__(self, app, token: str | None, max_body_bytes: int) -> None:
        self.app, self.token, self.max_body = app, token.encode() if token else None, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.token):
                return await _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                    headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        declared = headers.get(b"content-length")
        if declared is not None and not declared.isdigit():
            return await _error(400, "Content-Length must be a non-negative integer")(scope, receive, send)
        if declared is not None and int(declared) > self.max_body:
            return await _error(413, f"request body larger than {self.max_body} bytes")(scope, receive, send)
        body = await self._read_body(receive)
        if body is None:  # the client went away
            return
        if len(body) > self.max_body:
            return await _error(413, f"request body larger than {self.max_body} bytes")(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect, as the server would
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(self, receive) -> bytes | None:
        """The whole body (chunked bodies carry no length), read here so an oversized one is refused before the
        app parses anything; stops reading one chunk past the limit. None if the client disconnected."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body or not message.get("more_body", False):
                return b"".join(chunks)


def _json_safe(value):
    """Provenance is free-form: non-finite floats become null so the response is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _decision(choice: Choice, version: str) -> DecisionOut:
    return DecisionOut(action=ActionOut.of(choice.action), probability=choice.probability, value=choice.value,
                       policy_version=version)


def _row(policy: ServedPolicy, obs: ObservationIn, sample: bool, seed: int | None):
    features, mask, _ = policy.prepare(obs.features, obs.action_mask)
    return features, mask, sample, seed


def _prepared(policy: ServedPolicy, observations: list[ObservationIn]) -> tuple[np.ndarray, np.ndarray]:
    """A batch's (B, F) features and (B, M) masks, checked as a whole; only a batch with a bad row is checked row by
    row, so that the 422 names the first bad one (checking every row alone was most of a 256-row request)."""
    prepared = policy.prepare_batch([o.features for o in observations], [o.action_mask for o in observations])
    if prepared is not None:
        return prepared
    rows = []
    for i, obs in enumerate(observations):
        try:
            rows.append(policy.prepare(obs.features, obs.action_mask))
        except BadObservation as exc:
            raise BadObservation(f"observations[{i}]: {exc}") from None
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


def build_api(backend: Backend) -> FastAPI:
    """The HTTP routes over `backend` (wrap the result with `guarded` before serving it)."""
    api = FastAPI(title="Tamiyo", summary="Decisions of a trained Tamiyo policy (Esper)", docs_url=None, redoc_url=None)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()[:20]]
        return _error(422, "request does not match the schema (see detail)", detail)

    @api.exception_handler(BadObservation)
    async def _bad_observation(request: Request, exc: BadObservation):
        return _error(422, str(exc))

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @api.get("/healthz")
    async def healthz() -> dict:
        domains = backend.domains
        return {"status": "ok", "policy_version": domains.default_policy.version, "domains": domains.versions()}

    @api.get("/v1/policy")
    async def policy() -> dict:
        info = backend.domains.describe() | {"last_reload_error": getattr(backend, "reload_error", None)}
        return _json_safe(json.loads(json.dumps(info, default=str)))

    @api.post("/v1/decide", response_model=DecisionOut, responses={422: {"model": ErrorOut}})
    async def decide(req: DecideRequest) -> DecisionOut:
        policy = backend.domains.get(req.domain)  # one reference for the whole request: a hot reload cannot split it
        choice = await backend.decide_one(policy, _row(policy, req, req.sample, req.seed))
        return _decision(choice, policy.version)

    @api.post("/v1/decide/batch", response_model=BatchOut, responses={422: {"model": ErrorOut}})
    async def decide_batch(req: DecideBatchRequest) -> BatchOut:
        policy = backend.domains.get(req.domain)
        features, masks = _prepared(policy, req.observations)
        n = len(features)
        seeds = [None] * n if req.seed is None else [req.seed + i for i in range(n)]
        choices = policy.decide(features, masks, [req.sample] * n, seeds)  # already stacked: no decide_rows
        return BatchOut(decisions=[_decision(c, policy.version) for c in choices])

    return api


def guarded(api: FastAPI, token: str | None, max_body_bytes: int) -> Guard:
    """The ASGI app to serve: `api` behind the Guard (`token` = bearer auth on every route but /healthz)."""
    return Guard(api, token, max_body_bytes)


class InProcessBackend:
    """A Backend without Ray (tests, and embedding the API in another ASGI server): decides row by row."""

    def __init__(self, served: ServedPolicy | ServedDomains) -> None:
        self.domains = served if isinstance(served, ServedDomains) else ServedDomains({domain_of(served): served})
        self.reload_error = None

    async def decide_one(self, policy: ServedPolicy, row: tuple[np.ndarray, np.ndarray, bool, int | None]) -> Choice:
        return policy.decide_rows([row])[0]
