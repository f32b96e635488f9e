"""Validate custom resources against the field trees in ``crd_fields.yaml`` (KEDA, cert-manager, Prometheus Operator).

Why not the CRDs' own OpenAPI schemas: they are large generated files we would have to vendor, and the
structural schema of a CRD does not reject unknown fields unless the API server prunes them silently
(which is exactly the mistake we want to catch: a misspelt ``cooldownPeriod`` that KEDA never sees).
The field trees name each kind's fields, which are required, and their scalar types; anything else is
an error. The notation is described at the top of ``crd_fields.yaml``; its sources are cited per kind.

Used by ``tests/deploy/test_manifests.py``; ``test_crd_schema_*`` there pin that the checker itself rejects
unknown fields, missing required fields and wrong types.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

FIELDS_FILE = Path(__file__).with_name("crd_fields.yaml")
_ENUM = re.compile(r"^enum\((.*)\)$")


def load_kinds(path: Path = FIELDS_FILE) -> dict[str, Any]:
    """``{"group/version/Kind": field tree}`` from the field file."""
    return yaml.safe_load(path.read_text())["kinds"]


def kind_key(obj: dict[str, Any]) -> str:
    return f"{obj.get('apiVersion')}/{obj.get('kind')}"


def validate(obj: dict[str, Any], kinds: dict[str, Any]) -> list[str]:
    """Every problem in ``obj``, each as ``"<path>: <what is wrong>"``; empty when valid.

    Raises ``KeyError`` when the kind has no field tree (a test must then add one, not skip the object).
    """
    tree = kinds[kind_key(obj)]
    top = {"apiVersion!": "string", "kind!": "string", "metadata!": "any", "status": "any", **tree}
    problems: list[str] = []
    _check(obj, top, kind_key(obj), problems)
    return problems


def _check(value: Any, spec: Any, path: str, problems: list[str]) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        allowed = {k.rstrip("!"): k.endswith("!") for k in spec}
        for key, required in allowed.items():
            if required and key not in value:
                problems.append(f"{path}.{key}: required field missing")
        for key, sub in value.items():
            if key not in allowed:
                problems.append(f"{path}.{key}: unknown field (allowed: {', '.join(sorted(allowed))})")
                continue
            sub_spec = spec[key + "!"] if allowed[key] else spec[key]
            _check(sub, sub_spec, f"{path}.{key}", problems)
        return
    if isinstance(spec, list):
        if not isinstance(value, list):
            problems.append(f"{path}: expected an array, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, spec[0], f"{path}[{i}]", problems)
        return
    _check_scalar(value, str(spec), path, problems)


def _check_scalar(value: Any, spec: str, path: str, problems: list[str]) -> None:
    enum = _ENUM.match(spec)
    if enum:
        options = enum.group(1).split("|")
        if value not in options:
            problems.append(f"{path}: {value!r} is not one of {', '.join(options)}")
        return
    ok = {
        "any": lambda v: True,
        "string": lambda v: isinstance(v, str),
        # bool is a subclass of int in Python; YAML `true` is never an integer here.
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "quantity": lambda v: isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool)),
        "map": lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()),
    }.get(spec)
    if ok is None:
        raise ValueError(f"{path}: unknown type {spec!r} in {FIELDS_FILE.name}")
    if not ok(value):
        shown = {k: type(x).__name__ for k, x in value.items() if not isinstance(x, str)} if (
            spec == "map" and isinstance(value, dict)) else repr(value)
        problems.append(f"{path}: expected {spec}, got {shown}")
