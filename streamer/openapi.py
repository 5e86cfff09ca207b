"""The HTTP API's OpenAPI document as the API really behaves (docs/api.md).

FastAPI writes a document from the routes' signatures; several of the API's
rules live in its own code rather than in those signatures (the configured
horizons, resolutions and families; the bbox and date forms; who may call
what; the error bodies; the media types). :func:`document` adds them, so a
client generated from ``/openapi.json`` sends what the API takes and expects
what it answers. ``tests/integration/test_api_contract_openapi.py`` holds
the two together with schemathesis.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

JSON = "application/json"
GEOJSON = "application/geo+json"
EVENTS = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Facts:
    """What the document needs from the settings and the API's rules."""

    horizons: Sequence[str]
    resolutions: Sequence[int]
    families: Sequence[str]
    blends: Sequence[str]
    days: Sequence[str]
    bbox_pattern: str
    hour_pattern: str
    date_pattern: str
    note_max_chars: int


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "title": "Error",
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "string", "description": "what is wrong"}},
    },
    "StoreUnavailable": {
        "title": "StoreUnavailable",
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "enum": ["store unavailable"]}},
    },
    "HTTPValidationError": {
        "title": "HTTPValidationError",
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "array", "items": _ref("ValidationError")}},
    },
    "ValidationError": {
        "title": "ValidationError",
        "type": "object",
        "required": ["type", "loc", "msg"],
        "properties": {
            "type": {"type": "string", "description": "e.g. value_error, missing"},
            "loc": {
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "description": 'where: ["query", NAME], ["path", NAME] or ["body", ...]',
            },
            "msg": {"type": "string", "description": "what is wrong and what is taken"},
            "input": {
                "description": "the value refused (a string cut to 40 characters; "
                "absent for objects and lists)",
                "anyOf": [
                    {"type": "string", "maxLength": 40},
                    {"type": "number"},
                    {"type": "boolean"},
                    {"type": "null"},
                ],
            },
            "ctx": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Hotspot": {
        "title": "Hotspot",
        "type": "object",
        "required": [
            "cell",
            "rank",
            "score",
            "share",
            "trend",
            "count",
            "families",
            "peak_hours",
            "polygon",
        ],
        "properties": {
            "cell": {"type": "string", "pattern": "^[0-9a-f]{15}$"},
            "rank": {"type": "integer", "minimum": 1},
            "score": {"type": "number", "minimum": 0},
            "share": {"type": "number", "minimum": 0},
            "trend": {"anyOf": [{"type": "number", "minimum": 0}, {"type": "null"}]},
            "count": {"type": "integer", "minimum": 0},
            "families": {"type": "object", "additionalProperties": {"type": "number"}},
            "peak_hours": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 167},
            },
            "polygon": _ref("Ring"),
        },
    },
    "Ring": {
        "title": "Ring",
        "description": "a closed ring of [lon, lat] positions, counter-clockwise",
        "type": "array",
        "minItems": 4,
        "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}},
    },
    "Hotspots": {
        "title": "Hotspots",
        "type": "object",
        "required": ["sequence", "at", "horizon", "resolution", "family", "total", "hotspots"],
        "properties": {
            "sequence": {"type": "integer"},
            "at": {"type": "number", "description": "POSIX seconds the scores are decayed to"},
            "horizon": {"type": "string"},
            "resolution": {"type": "integer"},
            "family": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "total": {"type": "number", "minimum": 0},
            "hotspots": {"type": "array", "items": _ref("Hotspot")},
        },
    },
    "FeatureCollection": {
        "title": "FeatureCollection",
        "description": "RFC 7946; the JSON answer's own fields as foreign members",
        "type": "object",
        "required": ["type", "features"],
        "properties": {
            "type": {"type": "string", "enum": ["FeatureCollection"]},
            "features": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "geometry", "properties"],
                    "properties": {
                        "type": {"type": "string", "enum": ["Feature"]},
                        "geometry": {"type": "object"},
                        "properties": {"type": "object"},
                    },
                },
            },
        },
    },
    "Risk": {
        "title": "Risk",
        "type": "object",
        "required": ["at", "sequence", "in_study_area", "cells"],
        "properties": {
            "at": {"type": "number"},
            "sequence": {"type": "integer"},
            "in_study_area": {"type": "boolean"},
            "cells": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["resolution", "cell", "horizons"],
                    "properties": {
                        "resolution": {"type": "integer"},
                        "cell": {"type": "string"},
                        "horizons": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["rank", "score", "percentile", "hotspot"],
                                "properties": {
                                    "rank": {
                                        "anyOf": [
                                            {"type": "integer", "minimum": 1},
                                            {"type": "null"},
                                        ]
                                    },
                                    "score": {"type": "number"},
                                    "percentile": {"type": "number"},
                                    "hotspot": {"type": "boolean"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "Plan": {
        "title": "Plan",
        "description": '{"mode": "top"} (the ranking\'s top N) or {"mode": "list", "cells": '
        '[{"cell": HEX, "units": [UNIT, ...]}, ...]} (cells of dosage.resolution)',
        "oneOf": [
            {
                "type": "object",
                "required": ["mode"],
                "properties": {"mode": {"type": "string", "enum": ["top"]}},
            },
            {
                "type": "object",
                "required": ["mode", "cells"],
                "properties": {
                    "mode": {"type": "string", "enum": ["list"]},
                    "cells": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["cell"],
                            "properties": {
                                "cell": {"type": "string", "pattern": "^[0-9a-fA-F]{15}$"},
                                "units": {
                                    "type": "array",
                                    "items": {"type": "string", "minLength": 1},
                                },
                            },
                        },
                    },
                },
            },
        ],
    },
}

ERRORS: dict[int, tuple[str, str, str]] = {  # status -> description, media type, schema
    400: ("a body that is not JSON", JSON, "Error"),
    401: (
        "no token, an unknown one, or a token in the URL where only a header is taken",
        JSON,
        "Error",
    ),
    403: ("the token's role may not call this", JSON, "Error"),
    404: ("nothing there (the message says what)", JSON, "Error"),
    422: (
        "a parameter or body the API does not take (each error says why)",
        JSON,
        "HTTPValidationError",
    ),
    503: ("Redis cannot be reached", JSON, "StoreUnavailable"),
}

# per operation: success media types and schema, and the error statuses it can answer
OPERATIONS: dict[tuple[str, str], tuple[dict[str, str], tuple[int, ...]]] = {
    ("get", "/v1/config"): ({JSON: ""}, (401,)),
    ("get", "/v1/boundary"): ({GEOJSON: ""}, (401,)),
    ("get", "/v1/hotspots"): ({JSON: "Hotspots", GEOJSON: "FeatureCollection"}, (401, 422, 503)),
    ("get", "/v1/blends/{name}"): ({JSON: "", GEOJSON: "FeatureCollection"}, (401, 404, 422, 503)),
    ("get", "/v1/cells/{cell}"): ({JSON: ""}, (401, 404, 503)),
    ("get", "/v1/risk"): ({JSON: "Risk"}, (401, 403, 422, 503)),
    ("get", "/v1/windows"): ({JSON: ""}, (401, 422, 503)),
    ("get", "/v1/alerts"): ({JSON: ""}, (401, 422, 503)),
    ("get", "/v1/dosage"): ({JSON: ""}, (401, 404, 422, 503)),
    ("get", "/v1/dosage/plan"): ({JSON: ""}, (401, 404, 503)),
    ("put", "/v1/dosage/plan"): ({JSON: ""}, (400, 401, 403, 404, 422, 503)),
    ("get", "/v1/dosage/notes"): ({JSON: ""}, (401, 404, 503)),
    ("put", "/v1/dosage/notes/{cell}"): ({JSON: ""}, (400, 401, 403, 404, 422, 503)),
    ("get", "/v1/dosage/unit/{unit}"): ({JSON: ""}, (401, 404, 422, 503)),
    ("get", "/v1/stream"): ({EVENTS: ""}, (401, 503)),
}


def parameter_schemas(facts: Facts) -> dict[str, dict[str, Any]]:
    """Each parameter's schema by name (the same name means the same rule)."""
    return {
        "horizon": {"type": "string", "enum": list(facts.horizons)},
        "resolution": {"type": "integer", "enum": list(facts.resolutions)},
        "family": {
            "type": "string",
            "enum": list(facts.families),
            "description": "rank by this family's score (share and total are the family's)",
        },
        "bbox": {
            "type": "string",
            "pattern": facts.bbox_pattern,
            "description": "west,south,east,north in degrees: plain decimals, longitudes "
            "-180..180, latitudes -90..90 in either order; west > east crosses the "
            "antimeridian (RFC 7946, 5.2)",
        },
        "format": {"type": "string", "enum": ["json", "geojson"]},
        "date": {
            "type": "string",
            "format": "date",
            "pattern": facts.date_pattern,
            "description": "a local day YYYY-MM-DD in grid.timezone, years 1970 to 9998 "
            "(default: today on the engine's clock)",
        },
        "day": {"type": "string", "enum": list(facts.days)},
        "from": {"type": "string", "pattern": facts.hour_pattern, "description": "HH:00"},
        "to": {
            "type": "string",
            "pattern": facts.hour_pattern,
            "description": "HH:00; at or before from runs past midnight",
        },
        "status": {"type": "string", "enum": ["open", "all"]},
        "cell": {"type": "string", "pattern": "^[0-9a-f]{15}$", "description": "an H3 cell id"},
        "unit": {"type": "string", "minLength": 1},
        "name": {
            "type": "string",
            "description": f"a configured blend ({', '.join(facts.blends) or 'none configured'})",
        },
    }


def document(generated: dict[str, Any], facts: Facts) -> dict[str, Any]:
    """FastAPI's ``generated`` document with the API's real rules added."""
    doc = copy.deepcopy(generated)
    schemas = parameter_schemas(facts)
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update(copy.deepcopy(SCHEMAS))
    components["schemas"]["NoteBody"] = {
        "title": "NoteBody",
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {
                "type": "string",
                "maxLength": facts.note_max_chars,
                "description": "the note; empty removes it",
            }
        },
    }
    for name in list(components["schemas"]):
        if name.startswith("Body_"):
            del components["schemas"][name]
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "Authorization: Bearer TOKEN",
        },
        "accessToken": {
            "type": "apiKey",
            "in": "query",
            "name": "access_token",
            "description": "the token in the URL: taken only by /v1/stream and /v1/ws",
        },
    }
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            rule = OPERATIONS.get((method, path))
            if rule is None:
                continue
            media, errors = rule
            for param in op.get("parameters", []):
                schema = dict(schemas.get(param["name"], _non_null(param["schema"])))
                for kept in ("default", "minimum", "maximum"):
                    if kept in param["schema"]:
                        schema[kept] = param["schema"][kept]
                if "description" in param["schema"] and "description" not in schema:
                    schema["description"] = param["schema"]["description"]
                param["schema"] = schema
            if "requestBody" in op:
                body = "Plan" if path == "/v1/dosage/plan" else "NoteBody"
                op["requestBody"]["content"] = {JSON: {"schema": _ref(body)}}
            ok = {
                t: {"schema": _ref(name) if name else {"type": "object"}}
                for t, name in media.items()
            }
            responses: dict[str, Any] = {"200": {"description": "the answer", "content": ok}}
            for status in errors:
                description, kind, schema_name = ERRORS[status]
                responses[str(status)] = {
                    "description": description,
                    "content": {kind: {"schema": _ref(schema_name)}},
                }
            if 401 in errors:
                responses["401"]["headers"] = {
                    "WWW-Authenticate": {"schema": {"type": "string", "enum": ["Bearer"]}}
                }
            op["responses"] = responses
            op["security"] = [{"bearer": []}]
            if path == "/v1/stream":
                op["security"].append({"accessToken": []})
    return doc


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without FastAPI's ``null`` alternative
    (a query string has no null: an optional parameter is left out)."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [s for s in options if s.get("type") != "null"]
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}
