"""The web app's OpenAPI 3.1 description, built from its routes, their docstrings and the access policy,
so it cannot drift from what the app serves."""

from __future__ import annotations

import inspect
import re
from typing import Any

from sanic import Sanic

from callbot import __version__
from callbot.auth.policy import PUBLIC, ROUTES, SERVICE

PARAM = re.compile(r"<(\w+)(?::(\w+))?>")
TYPES = {"int": "integer", "float": "number"}


def _operation(route: Any, method: str) -> dict[str, Any]:
    doc = inspect.getdoc(route.handler) or ""
    summary, _, description = doc.partition("\n")
    requirement = ROUTES.get(route.name, "refused")
    op: dict[str, Any] = {
        "operationId": f"{route.name.split('.', 1)[-1]}_{method.lower()}",
        "summary": summary.strip() or route.name.rsplit(".", 1)[-1].replace("_", " "),
        "tags": [route.name.split(".")[1]],
        "x-callbot-permission": requirement,
        "responses": {"200": {"description": "OK"}, "400": {"description": "Bad input: {\"error\": \"…what and how to fix\"}"}},
    }
    if description.strip():
        op["description"] = description.strip()
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": TYPES.get(kind or "str", "string")}}
              for name, kind in PARAM.findall("/" + route.path)]
    if params:
        op["parameters"] = params
    if requirement == PUBLIC:
        op["security"] = []
    else:
        op["responses"] |= {"401": {"description": "Not signed in"}, "403": {"description": "Role lacks the permission, or CSRF"}}
        op["security"] = [{"bearer": []}] if requirement == SERVICE else [{"session": [], "csrf": []}, {"bearer": []}]
    return op


def describe(app: Sanic) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes:
        if route.path.startswith("socket.io"):
            continue
        path = "/" + PARAM.sub(lambda m: "{" + m.group(1) + "}", route.path)
        for method in sorted(route.methods):
            if method in ("HEAD", "OPTIONS"):
                continue
            paths.setdefault(path, {})[method.lower()] = _operation(route, method)
    return {
        "openapi": "3.1.0",
        "info": {"title": "callbot web API", "version": __version__,
                 "description": "Knowledge base, NLU, conversations, agent desk, campaigns and staff accounts. Staff sign in "
                                "with POST /auth/login (cookie + X-CSRF-Token header on changes) or use an API token from "
                                "`callbot user token` as a Bearer token."},
        "components": {"securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": "callbot_session"},
            "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": dict(sorted(paths.items())),
    }
