"""The OpenAPI document and a property-based walk over the API (SPEC §5)."""

from __future__ import annotations

import ast
import copy
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from sqlalchemy import select

import entitle
from conftest import auth
from entitle.api.app import route_dependants
from entitle.db import transaction
from entitle.tenancy.models import ApiToken, User
from helpers import org_with_owner

ERROR_KEYS = {"code", "message", "detail"}
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}
METHODS = ("get", "post", "put", "patch", "delete")
# Examples per operation and generation mode: ~110 operations, so ~1,100 cases a mode.
EXAMPLES = 10


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items() if method in METHODS]


def test_the_openapi_document_is_served(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/orgs/{org_id}/wallet/redeem" in spec["paths"]
    assert all(p.startswith("/api/v1/") or p == "/healthz" for p in spec["paths"])


def test_every_error_status_is_documented_with_the_error_shape(client):
    # SPEC §5, issue 15 point 6: each operation lists the error statuses it answers (no catch-all
    # "default", which would make status-code conformance vacuous), each in the one error shape
    # (FastAPI's own 422 schema, which is not what the API answers, is gone).
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert set(spec["components"]["schemas"]["ErrorBody"]["properties"]) == {"error"}
    for path, method, op in operations(spec):
        where = f"{method.upper()} {path}"
        assert "default" not in op["responses"], where
        errors = {int(s): r for s, r in op["responses"].items() if int(s) >= 400}
        assert 500 in errors, where
        for status, answer in errors.items():
            assert answer["content"] == {"application/json": {"schema": ERROR_SCHEMA}}, (where, status)
            assert answer["description"], (where, status)
        params = {p["in"] for p in op.get("parameters", [])}
        if "path" in params:
            assert 404 in errors, where  # the object the path names may not exist
        if "authorization" in {p["name"].lower() for p in op.get("parameters", [])}:
            assert 401 in errors, where
        if params or "requestBody" in op:
            assert 422 in errors, where


@pytest.fixture
def api(world, app) -> dict[str, Any]:  # noqa: ANN001
    """An issuer who also owns an organization: most routes can succeed for this caller."""
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    with transaction(world.ctx.sessions) as s:
        s.get(User, owner.user.id).is_issuer = True
        token_id = s.scalars(select(ApiToken.id)).one()
    return {"schema": schemathesis.openapi.from_asgi("/openapi.json", app), "org": org,
            "token": owner.token, "token_id": token_id}


def check_response(case: schemathesis.Case, api: dict[str, Any]) -> None:
    if "org_id" in (case.path_parameters or {}) and isinstance(case.path_parameters["org_id"], int) \
            and case.path_parameters["org_id"] % 2 == 0:
        case.path_parameters["org_id"] = api["org"]  # half the time, the caller's own organization
    if (case.path_parameters or {}).get("token_id") == api["token_id"]:
        case.path_parameters["token_id"] += 1  # revoking the caller's own token would make every later case a 401
    response = case.call(headers=auth(api["token"]))
    api["cases"] = api.get("cases", 0) + 1
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if 400 <= response.status_code < 500:
        body = response.json()
        assert set(body) == {"error"}, where
        assert set(body["error"]) == ERROR_KEYS, where
        assert isinstance(body["error"]["code"], str) and body["error"]["code"], where
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], where
        assert isinstance(body["error"]["detail"], dict), where
    # The document tells the truth: the status is one it lists for the operation, the body
    # matches the schema it gives for that status (issue 15 point 6).
    case.validate_response(response, checks=[status_code_conformance, response_schema_conformance])


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_every_answer_is_the_documented_one(api, mode):
    # SPEC §5: consistent errors; no input, valid or not, makes the server fail; every answer's
    # status and body are those the OpenAPI document gives, in every operation. (schemathesis'
    # pytest loader `from_fixture` does not work with this pytest, so each operation's strategy
    # is driven by hypothesis directly; every operation runs, and the failures of all are shown.)
    operations = [result.ok() for result in api["schema"].get_all_operations()]
    assert len(operations) >= 100
    exercised, failures, started = [], {}, time.monotonic()
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            check_response(case, api)

        try:
            run()
        except Unsatisfiable:
            # Negative mode has nothing to break in some operations (e.g. only a free-form body).
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        except (Exception, FailureGroup) as failure:  # a crash too: the app's errors reach the test client
            failures[operation.label] = str(failure)[:2000]
        exercised.append(operation.label)
    assert not failures, "\n\n".join(f"{label}: {text}" for label, text in failures.items())
    if mode is GenerationMode.POSITIVE:
        assert len(exercised) == len(operations)
    else:
        assert len(exercised) >= len(operations) * 3 // 4, exercised
    seconds = time.monotonic() - started
    print(f"schemathesis {mode.value}: {api['cases']} cases, {len(exercised)} operations, {seconds:.0f} s")
    assert api["cases"] >= len(exercised)
    assert seconds < 600  # EXAMPLES keeps the walk to a minute or two


def test_the_conformance_checks_catch_an_undocumented_answer(api):
    # The walk above would pass vacuously if the checks did not look: an answer the document
    # does not list (418), or a body that is not the documented shape, fails them.
    operation = api["schema"]["/api/v1/orgs/{org_id}/wallet"]["GET"]
    case = operation.Case(path_parameters={"org_id": api["org"]})
    request = httpx.Request("GET", f"http://testserver/api/v1/orgs/{api['org']}/wallet")

    def answer(status: int, body: Any) -> httpx.Response:
        response = httpx.Response(status, json=body, request=request)
        response.elapsed = timedelta(0)
        return response

    with pytest.raises(FailureGroup):
        case.validate_response(answer(418, {"error": {"code": "x", "message": "x", "detail": {}}}),
                               checks=[status_code_conformance])
    with pytest.raises(FailureGroup):
        case.validate_response(answer(200, [{"units": 1}]), checks=[response_schema_conformance])
    case.validate_response(answer(200, {"org_id": api["org"], "lines": []}),
                           checks=[status_code_conformance, response_schema_conformance])


# --- every refusal a route's code can raise is in the document --------------------------------
#
# Schemathesis reaches the refusals its random requests provoke; a refusal that needs a state it
# never builds (a 409 after a second registration, a 403 for a viewer) would go undocumented
# unseen. So the routes' source is read too: from each operation's endpoint (and the
# dependencies it declares) every function of the package it calls, transitively, and every
# error it constructs (NotFound -> 404, Conflict -> 409, EntitleError(status=...) -> that...).
# Calls are resolved by name: a module's function, an imported one, a method of any class of
# the package with that name. That over-approximates (a method name shared by two classes
# counts both), so the document may list a status a route cannot reach, never miss one it can.

ERROR_BASES = {"EntitleError": {400}, "NotFound": {404}, "Forbidden": {403}, "Conflict": {409},
               "Unauthorized": {401}, "RateLimited": {429}, "Busy": {503}}


class Refusals:
    """The error statuses each function of ``entitle`` can raise, read from its source."""

    def __init__(self) -> None:
        root = Path(entitle.__file__).parent
        self.modules = {".".join(("entitle", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"):
                        ast.parse(p.read_text()) for p in root.rglob("*.py")}
        self.functions: dict[str, tuple[ast.FunctionDef | ast.AsyncFunctionDef, str, ast.ClassDef | None]] = {}
        self.methods: dict[str, list[str]] = {}
        self.imports: dict[str, dict[str, str]] = {}
        classes: dict[str, ast.ClassDef] = {}
        for name, tree in self.modules.items():
            aliases = self.imports.setdefault(name, {})
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
                elif isinstance(node, ast.Import):
                    aliases.update({a.asname or a.name: a.name for a in node.names})
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.functions[f"{name}.{node.name}"] = (node, name, None)
                elif isinstance(node, ast.ClassDef):
                    classes[node.name] = node
                    for item in node.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            self.functions[f"{name}.{node.name}.{item.name}"] = (item, name, node)
                            self.methods.setdefault(item.name, []).append(f"{name}.{node.name}.{item.name}")
        self.errors = dict(ERROR_BASES)
        self.by_code: dict[str, dict[str, int]] = {}
        grown = True
        while grown:  # subclasses of the error classes, at any depth
            grown = False
            for cls in classes.values():
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases]
                base = next((b for b in bases if b in self.errors), None)
                if base and cls.name not in self.errors:
                    self.errors[cls.name] = self._class_statuses(cls) or self.errors[base]
                    grown = True
        self.direct: dict[str, tuple[set[int | str], set[str]]] = {}

    def _class_statuses(self, cls: ast.ClassDef) -> set[int | str]:
        for item in cls.body:  # a table of status by code: _STATUS = {"payment_declined": 402, ...}
            if isinstance(item, ast.Assign) and isinstance(item.value, ast.Dict) and all(
                    isinstance(k, ast.Constant) and isinstance(k.value, str) for k in item.value.keys):
                self.by_code[cls.name] = {k.value: v.value for k, v in zip(item.value.keys, item.value.values)
                                          if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)}
        for item in cls.body:  # status = 409
            if isinstance(item, ast.Assign) and any(getattr(t, "id", "") == "status" for t in item.targets):
                return self._values(item.value, None, cls)
        for item in cls.body:  # def __init__(...): super().__init__(..., status=...)
            if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                for call in ast.walk(item):
                    if isinstance(call, ast.Call):
                        for kw in call.keywords:
                            if kw.arg == "status":
                                return self._values(kw.value, item, cls)
        return set()

    def _values(self, expr: ast.expr, func: ast.AST | None, cls: ast.ClassDef | None) -> set[int | str]:
        """The statuses an expression can be: a number, a name assigned in the function or the
        class, ``{...}.get(code, default)``; anything else is unknown ('?' + the source)."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, int):
            return {expr.value}
        if isinstance(expr, ast.Dict):
            return set().union(*(self._values(v, func, cls) for v in expr.values))
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "get":
            return self._values(expr.func.value, func, cls).union(*(self._values(a, func, cls) for a in expr.args[1:]))
        name = expr.id if isinstance(expr, ast.Name) else expr.attr if isinstance(expr, ast.Attribute) else None
        for scope in (func, cls):
            for node in ast.walk(scope) if scope is not None else ():
                if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == name for t in node.targets):
                    return self._values(node.value, func, cls)
        return {f"?{ast.unparse(expr)}"}

    def _calls(self, qualname: str) -> tuple[set[int | str], set[str]]:
        func, module, cls = self.functions[qualname]
        statuses: set[int | str] = set()
        calls: set[str] = set()
        aliases = self.imports[module]
        for node in ast.walk(func):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in self.errors:
                status = next((kw.value for kw in node.keywords if kw.arg == "status"), None)
                code = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
                if status is not None:
                    statuses |= self._values(status, func, cls)
                elif code in self.by_code.get(name, {}):  # PaymentError("payment_declined", ...) -> 402
                    statuses.add(self.by_code[name][code])
                else:
                    statuses |= self.errors[name]
            elif isinstance(f, ast.Name):
                calls.add(f"{module}.{f.id}" if f"{module}.{f.id}" in self.functions else aliases.get(f.id, ""))
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in aliases:
                calls.add(f"{aliases[f.value.id]}.{f.attr}")  # module.function or Class.method
            elif isinstance(f, ast.Attribute):
                calls.update(self.methods.get(f.attr, []))  # obj.method(): any class's method of that name
        return statuses, {c for c in calls if c in self.functions}

    def of(self, *qualnames: str) -> set[int | str]:
        """The statuses these functions, or any function they call, can raise."""
        seen, todo, statuses = set(qualnames), [q for q in qualnames if q in self.functions], set()
        while todo:
            if todo[-1] not in self.direct:
                self.direct[todo[-1]] = self._calls(todo[-1])
            raised, calls = self.direct[todo.pop()]
            statuses |= raised
            todo += [c for c in calls - seen]
            seen |= calls
        return statuses


def undocumented(app: Any, spec: dict[str, Any], refusals: Refusals) -> list[str]:
    """Each status an operation's code can raise that its entry in ``spec`` does not list."""
    missing = []
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        functions = [f"{d.call.__module__}.{d.call.__qualname__}" for d in route_dependants(route.dependant) if d.call]
        raised = refusals.of(*functions)
        assert not {s for s in raised if isinstance(s, str)}, (route.path_format, raised)  # a status it cannot tell
        for method in route.methods:
            documented = {int(s) for s in spec["paths"][route.path_format][method.lower()]["responses"]}
            missing += [f"{method} {route.path_format}: {s}" for s in sorted(raised - documented)]
    return missing


def test_every_refusal_a_route_can_raise_is_documented(app):
    # Issue 15 point 6: what schemathesis cannot reach is read from the source (above).
    spec, refusals = app.openapi(), Refusals()
    assert undocumented(app, spec, refusals) == []
    # The reading finds what a route raises: without its 403 (issuer_only), listing key
    # batches would be reported.
    assert refusals.of("entitle.api.routes.issuer.mint") >= {400, 403, 404}
    tampered = copy.deepcopy(spec)
    del tampered["paths"]["/api/v1/issuer/key-batches"]["get"]["responses"]["403"]
    assert undocumented(app, tampered, refusals) == ["GET /api/v1/issuer/key-batches: 403"]


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/api/v1/orgs/{org}/ledger?cursor=99999999999999999999", None),
    ("GET", "/api/v1/orgs/{org}/history?cursor=99999999999999999999", None),
    ("GET", "/api/v1/orgs?cursor=-1", None),
    ("POST", "/api/v1/orgs", {"name": "Nul\u0000Org", "region": "EU"}),
    ("POST", "/api/v1/orgs/{org}/members", {"email": "x\u0000@example.com", "role": "admin"}),
    ("POST", "/api/v1/auth/token", {"email": "x\u0000@example.com", "password": "p"}),
    ("POST", "/api/v1/issuer/key-batches", {"part_number": "9137\u00008", "count": 1}),
    ("POST", "/api/v1/orgs/{org}/wallet/redeem", {"key": "AAAAA\u0000AAAAA"}),
    ("POST", "/api/v1/catalog", {"products": [{"code": "p", "name": "n" * 500, "model": "axis"}]}),
])
def test_hostile_values_are_refused_not_crashed_on(api, client, method, path, body):
    # SPEC §5: out-of-range numbers, NUL characters, over-long texts -> a 4xx with the error shape
    # on both databases (these were 500s on PostgreSQL or SQLite).
    url = path.replace("{org}", str(api["org"]))
    r = client.request(method, url, json=body, headers=auth(api["token"], "hostile"))
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()["error"]) == ERROR_KEYS


def _get_operations(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(path, op) for path, method, op in operations(spec) if method == "get"]


def test_the_documented_largest_cursor_is_accepted_by_every_list(api, client):
    # Issue 15 point 6: the cursor's documented maximum is 2^63-1; a history cursor above the
    # 32-bit seq column was refused (400 on PostgreSQL). Every list the caller can reach answers.
    spec = client.get("/openapi.json").json()
    paged = [(path, op) for path, op in _get_operations(spec)
             if any(p["name"] == "cursor" for p in op.get("parameters", []))
             and {p["name"] for p in op.get("parameters", []) if p["in"] == "path"} <= {"org_id"}]
    assert len(paged) >= 15
    for path, op in paged:
        cursor = next(p for p in op["parameters"] if p["name"] == "cursor")["schema"]["anyOf"][0]
        assert cursor["maximum"] == 2**63 - 1, path
        for value in (2**63 - 1, 2**63 - 2, 2**31):
            r = client.get(path.replace("{org_id}", str(api["org"])), params={"cursor": value},
                           headers=auth(api["token"]))
            assert r.status_code == 200, (path, value, r.text)
            assert r.json()["next_cursor"] is None, (path, value)


def test_an_id_beyond_the_database_range_names_nothing(api, client):
    # Issue 15 point 6: an id path parameter beyond 64 bits answered 400 value_invalid (the
    # drivers refuse the number); like any id that names nothing, it is a 404 (ids with a
    # documented maximum are refused above it, 422, as documented).
    spec = client.get("/openapi.json").json()
    checked = 0
    for path, op in _get_operations(spec):
        ids = [p for p in op.get("parameters", []) if p["in"] == "path" and p["schema"].get("type") == "integer"
               and p["name"] != "org_id"]
        if not ids:
            continue
        url = path.replace("{org_id}", str(api["org"]))
        for p in op["parameters"]:
            if p["in"] == "path" and p["name"] != "org_id":
                big = 2**63 - 1 if "maximum" in p["schema"] else 2**64
                url = url.replace("{%s}" % p["name"], str(big) if p["schema"].get("type") == "integer" else "x")
        r = client.get(url, headers=auth(api["token"]))
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"].endswith("not_found"), (path, r.text)
        checked += 1
    assert checked >= 10
    r = client.get(f"/api/v1/orgs/{2**64}", headers=auth(api["token"]))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "organization_not_found")
