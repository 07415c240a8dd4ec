"""Checks Istio objects against Istio's own typed models.

Runs inside the root tools/istio-models/install.sh builds (CPython 3.14 with
cloudcoil-models-istio, generated from Istio 1.31's CRDs); deploy/checks.py
istio-kinds runs it there.

    validate.py FILE=NAME...

Each FILE is read as YAML documents; NAME is how reports call it. Objects of an
*.istio.io apiVersion are validated against the model of their kind: types,
enums (FAIL_RELOAD, INSERT_BEFORE, ...), required fields, and fields the
schema does not have (the models keep quiet about those, Kubernetes' strict
field validation refuses them). Other objects are not Istio's and are left to
the other checks. Exit status 1 if any object fails.
"""

import importlib
import sys

import pydantic
import yaml

ISTIO_GROUP = ".istio.io"
ISTIO_VERSION = "1.31"


def model_for(api_version: str, kind: str):
    group, _, version = api_version.partition("/")
    try:
        module = importlib.import_module(f"cloudcoil.models.istio.{group.removesuffix(ISTIO_GROUP)}.{version}")
    except ImportError:
        return None
    model = getattr(module, kind, None)
    return model if isinstance(model, type) and issubclass(model, pydantic.BaseModel) else None


def path(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def unknown_fields(given, kept, loc=()):
    """Fields of the document that validation dropped: the schema has no such field."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                yield path(loc + (key,))
            else:
                yield from unknown_fields(value, kept[key], loc + (key,))
    elif isinstance(given, list) and isinstance(kept, list):
        for index, (item, kept_item) in enumerate(zip(given, kept)):
            yield from unknown_fields(item, kept_item, loc + (index,))


def problems(doc: dict):
    model = model_for(doc.get("apiVersion", ""), doc.get("kind", ""))
    if model is None:
        yield f"no {doc.get('kind')} in {doc.get('apiVersion')} (Istio {ISTIO_VERSION})"
        return
    try:
        valid = model.model_validate(doc)
    except pydantic.ValidationError as error:
        for e in error.errors():
            yield f"{path(e['loc'])}: {e['msg']}"
        return
    kept = valid.model_dump(by_alias=True, exclude_unset=True, mode="json")
    for field in unknown_fields(doc, kept):
        yield f"{field}: no such field in the schema"


def main(argv: list[str]) -> int:
    failed = 0
    checked: dict[str, int] = {}
    for arg in argv:
        file, _, name = arg.partition("=")
        with open(file, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
        for doc in docs:
            if not str(doc.get("apiVersion", "")).partition("/")[0].endswith(ISTIO_GROUP):
                continue
            where = f"{name or file}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            found = list(problems(doc))
            for problem in found:
                print(f"FAIL: {where}: {problem}")
            failed += bool(found)
            checked[doc.get("kind")] = checked.get(doc.get("kind"), 0) + 1
    if not checked:
        print("FAIL: no Istio object in the files given")
        return 1
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(checked.items()))
    if failed:
        print(f"{failed} of {sum(checked.values())} Istio objects do not fit Istio {ISTIO_VERSION}'s schemas")
        return 1
    print(f"ok: {kinds}: every field, type and enum fits Istio {ISTIO_VERSION}'s schemas (cloudcoil-models-istio)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
