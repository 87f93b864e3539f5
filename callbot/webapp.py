"""The web app: knowledge-base API, NLU API, chat widget and admin pages (Sanic, one process)."""

from __future__ import annotations

import logging

from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, json

from callbot.context import get_store
from callbot.logs import setup_logging
from callbot.settings import get_settings
from knowledge_base import api as kb_api
from knowledge_base.errors import CallbotError
from nlu import api as nlu_api

log = logging.getLogger("callbot.web")


def create_app() -> Sanic:
    app = Sanic("callbot")
    app.config.REQUEST_MAX_SIZE = 60 * 1024 * 1024
    app.blueprint(kb_api.bp)
    app.blueprint(nlu_api.bp)
    from callbot import conversations_api, pages

    app.blueprint(conversations_api.bp)
    from campaigns import api as campaigns_api
    from nlu.compliance import api as compliance_api

    app.blueprint(campaigns_api.bp)
    app.blueprint(compliance_api.bp)
    app.blueprint(pages.bp)
    from callbot.auth import api as auth_api
    from callbot.auth import guard, idempotency
    from callbot.chat import api as chat_api
    from callbot.chat import socket_channel
    from callbot.desk import api as desk_api

    app.blueprint(auth_api.bp)
    app.blueprint(chat_api.bp)
    app.blueprint(desk_api.bp)
    socket_channel.attach(app)
    guard.install(app)
    idempotency.install(app)

    @app.get("/health")
    async def health(_request: Request) -> HTTPResponse:
        return json({"status": "ok", "kb_version": get_store().kb_version()})

    @app.get("/api")
    async def api_index(_request: Request) -> HTTPResponse:
        """Every route, one line each; the full description is /api/openapi.json."""
        return json({"endpoints": sorted({f"{'/'.join(r.methods)} /{r.path}" for r in app.router.routes}),
                     "openapi": "/api/openapi.json"})

    @app.get("/api/openapi.json", name="openapi")
    async def openapi_description(_request: Request) -> HTTPResponse:
        """This API as an OpenAPI 3.1 document (paths, parameters, who may call each)."""
        from callbot.openapi import describe

        return json(describe(app))

    @app.exception(CallbotError)
    async def callbot_error(_request: Request, exc: CallbotError) -> HTTPResponse:
        return json({"error": str(exc)}, status=kb_api.error_status(exc))

    @app.exception(SanicException)
    async def http_error(request: Request, exc: SanicException) -> HTTPResponse:
        # Sanic's own refusals (404, 405, body too large, malformed request) as the same JSON shape.
        return json({"error": str(exc) or type(exc).__name__, "path": request.path}, status=getattr(exc, "status_code", 500))

    @app.before_server_start
    async def prepare(_app: Sanic) -> None:
        get_store().migrate()
        import asyncio

        from nlu.api import ENCODING
        from nlu.service import get_matcher

        # Load the encoder and build the indexes before the first request, on the thread that will
        # encode every parse: encoding here on the loop's thread left a second OpenMP team behind, and
        # the two made each parse about twice as slow (benchmarks/parse.py: 12.4 vs 5.9 ms match).
        await asyncio.get_running_loop().run_in_executor(ENCODING, get_matcher)

    return app


def main() -> None:
    settings = get_settings()
    setup_logging(settings.log_level)
    app = create_app()
    app.run(host=settings.host, port=settings.ports.web, single_process=True, access_log=False, motd=False)


if __name__ == "__main__":
    main()
