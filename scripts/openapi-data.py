#!/usr/bin/env python3
"""Builds core/openapi/kubernetes-1.34.json.gz: the Kubernetes 1.34 API's
schemas (descriptions, types, x-kubernetes-* extensions: patch merge keys
and strategies, list types, group-version-kinds), as OpenAPI v3
`components.schemas`, for /openapi/v3, `kubectl explain` and `peapod explain`.

The schemas come from the kubernetes-validate wheel on PyPI (Apache-2.0;
its kubernetes-json-schema/v1.34.0-local/_definitions.json is Kubernetes'
own OpenAPI spec as JSON Schema). They are turned back into OpenAPI v3:
`type: [T, "null"]` becomes `type: T`, `$ref`s point at
`#/components/schemas/`, and IntOrString and Quantity take the forms the
API server's documents give them. Run once per Kubernetes minor; the output
is committed.

    python3 scripts/openapi-data.py            # downloads the pinned wheel
    python3 scripts/openapi-data.py WHEEL      # or reads one already here
"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "kubernetes_validate-1.37.0-py3-none-any.whl"
SHA256 = "85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9"
MEMBER = "kubernetes_validate/kubernetes-json-schema/v1.34.0-local/_definitions.json"
OUT = os.path.join(os.path.dirname(__file__), "..", "core", "openapi", "kubernetes-1.34.json.gz")


def wheel_bytes():
    if len(sys.argv) > 1:
        data = open(sys.argv[1], "rb").read()
    else:
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-d", d, "kubernetes-validate==1.37.0"],
                check=True,
            )
            data = open(os.path.join(d, WHEEL), "rb").read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        sys.exit(f"{WHEEL}: sha256 {digest}, want {SHA256}")
    return data


def convert(schema):
    """One schema node, OpenAPI v3 style."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            out["type"] = kinds[0] if len(kinds) == 1 else kinds
        elif key == "$ref" and isinstance(value, str):
            out["$ref"] = value.replace("#/$defs/", "#/components/schemas/")
        elif key in ("properties", "patternProperties") and isinstance(value, dict):
            out[key] = {name: convert(s) for name, s in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = convert(value)
        elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
            out[key] = [convert(s) for s in value]
        else:
            out[key] = value
    return out


def main():
    with zipfile.ZipFile(io.BytesIO(wheel_bytes())) as z:
        defs = json.loads(z.read(MEMBER))["$defs"]
    schemas = {name: convert(s) for name, s in defs.items()}
    # As the API server's OpenAPI documents give them.
    for name, fmt in (
        ("io.k8s.apimachinery.pkg.util.intstr.IntOrString", "int-or-string"),
        ("io.k8s.apimachinery.pkg.api.resource.Quantity", None),
    ):
        old = schemas[name]
        new = {"description": old.get("description", ""), "type": "string"}
        if fmt:
            new["format"] = fmt
            new["x-kubernetes-int-or-string"] = True
        schemas[name] = new
    text = json.dumps(schemas, sort_keys=True, separators=(",", ":")).encode()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(gzip.compress(text, 9, mtime=0))
    print(f"{OUT}: {len(schemas)} schemas, {len(text)} bytes of JSON")


if __name__ == "__main__":
    main()
