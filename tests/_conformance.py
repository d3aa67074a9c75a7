"""
Every answer a test gets must be one the OpenAPI document promises.

L{tests._api.APIClient} hands each answer to L{Conformance.check}: it finds
the operation the request reached with the API's own routing (the Klein
app's Werkzeug map), then checks that the document lists the status code,
that the media type is one the document gives for it, that a JSON body
validates against the document's schema (JSON Schema 2020-12, with
C{jsonschema}, against the whole document so its C{$ref}s resolve), that a
status without content has no body, and that every header the document
calls required is there.  A mismatch fails the test: the document cannot
drift from what the code answers while the suite runs.
"""

from __future__ import annotations

import json
import weakref
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from werkzeug.exceptions import HTTPException

from comet.web._table import JSON
from comet.web.openapi import ERROR, document, openapi_path


class ConformanceError(AssertionError):
    """An answer the OpenAPI document does not allow."""


_documents: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _document(routes) -> dict:
    doc = _documents.get(routes)
    if doc is None:
        doc = _documents[routes] = document(routes)
    return doc


def schema_of(doc: dict, response: dict, media: str = JSON) -> Draft202012Validator:
    """A validator of the body of C{response} (a response object of C{doc})."""
    return Draft202012Validator({**response["content"][media]["schema"], "components": doc["components"]})


class Conformance:
    """Checks answers of C{api} (a L{comet.web.CometAPI}) against its route table's document."""

    def __init__(self, api):
        self.routes = api.routes
        self.doc = _document(api.routes)
        self.adapter = api.app.url_map.bind("comet.test")
        self._validators: dict[int, Draft202012Validator] = {}

    def _validator(self, schema: dict) -> Draft202012Validator:
        validator = self._validators.get(id(schema))
        if validator is None:
            # The whole document's components beside the schema: its $refs
            # ("#/components/schemas/...") resolve within this root.
            root = {**schema, "components": self.doc["components"]}
            validator = self._validators[id(schema)] = Draft202012Validator(root)
        return validator

    def check(self, method: str, uri: str, code: int, headers, body: bytes) -> None:
        """Raise L{ConformanceError} unless the document allows this answer to C{method uri}."""
        path = urlsplit(uri).path
        where = f"{method} {path} answered {code}"
        try:
            name, _ = self.adapter.match(path, method="GET" if method == "HEAD" else method)
        except HTTPException:
            # Routing's own answer (404, 405), or a URI refused before routing (400).
            self._check_error(where, code, headers, body)
            return
        except Exception:
            # Werkzeug cannot even read the URI (it is not UTF-8): refused before routing.
            self._check_error(where, code, headers, body)
            return
        item = self.doc["paths"][openapi_path(self.routes.pattern(name))]
        operation = item.get(("get" if method == "HEAD" else method).lower())
        if operation is None:
            self._check_error(where, code, headers, body)
            return
        responses = operation["responses"]
        response = responses.get(str(code))
        if response is None:
            if code >= 400 and "default" in responses:
                response = responses["default"]
            else:
                raise ConformanceError(
                    f"{where}, which the OpenAPI document does not list"
                    f" (it lists {', '.join(sorted(responses))}): {body[:300]!r}")
        for header, spec in response.get("headers", {}).items():
            if spec.get("required") and not headers.hasHeader(header):
                raise ConformanceError(f"{where} without the {header} header the document requires")
        content = response.get("content")
        if method == "HEAD":
            return
        if not content:
            if body:
                raise ConformanceError(f"{where} with a body, where the document has none: {body[:300]!r}")
            return
        media = (headers.getRawHeaders("content-type") or [""])[0].split(";")[0].strip()
        if media not in content and "*/*" not in content:
            raise ConformanceError(
                f"{where} as {media or 'no media type'}; the document says {', '.join(content)}")
        schema = content.get(media, {}).get("schema")
        if media == JSON and schema is not None:
            self._validate(where, schema, body)

    def _validate(self, where: str, schema: dict, body: bytes) -> None:
        try:
            value = json.loads(body)
        except ValueError:
            raise ConformanceError(f"{where} with a body that is not JSON: {body[:300]!r}") from None
        errors = sorted(self._validator(schema).iter_errors(value), key=lambda e: list(e.path))
        if errors:
            detail = "; ".join(
                f"at {'/'.join(str(p) for p in e.absolute_path) or '(body)'}: {e.message}"
                for e in errors[:5]
            )
            raise ConformanceError(f"{where}: the body breaks the document's schema: {detail}")

    def _check_error(self, where: str, code: int, headers, body: bytes) -> None:
        if code < 400:
            raise ConformanceError(f"{where}, though no operation of the document is there")
        media = (headers.getRawHeaders("content-type") or [""])[0].split(";")[0].strip()
        if media != JSON:
            raise ConformanceError(f"{where} as {media or 'no media type'}, not a JSON error")
        self._validate(where, ERROR, body)
