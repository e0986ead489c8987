"""Trim a CustomResourceDefinition to the JSON schema tests/test_deploy.py validates against.

    python deploy/schemas/trim_crd.py CRD.yaml VERSION OUT.json [--pod-template FIELD.PATH ...]

Keeps ``spec.versions[name=VERSION].schema.openAPIV3Schema`` and drops every ``description``
and the ``status`` subtree (never written by a manifest). Each ``--pod-template`` path (dotted,
``[]`` for list items) is replaced by an object that accepts anything: the test validates those
embedded PodTemplateSpecs against the Kubernetes core schema instead, which is stricter and
already pinned by kubernetes-validate. Only PyYAML is needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

OPEN_OBJECT: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def strip_descriptions(node: Any) -> Any:
    """The schema without any ``description`` keys (they are most of a CRD's bytes)."""
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def open_subtree(schema: dict[str, Any], path: str) -> None:
    """Replace the property at dotted ``path`` (``a.b[].c``) with an open object."""
    node = schema
    parts = path.split(".")
    for i, part in enumerate(parts):
        is_list = part.endswith("[]")
        name = part.removesuffix("[]")
        props = node.get("properties", {})
        if name not in props:
            raise SystemExit(f"trim_crd: no property {name!r} on the way to {path!r}")
        if i == len(parts) - 1:
            if is_list:
                props[name]["items"] = dict(OPEN_OBJECT)
            else:
                props[name] = dict(OPEN_OBJECT)
            return
        node = props[name]["items"] if is_list else props[name]


def trim(crd: dict[str, Any], version: str, pod_templates: list[str]) -> dict[str, Any]:
    """The trimmed openAPIV3Schema of one served version of ``crd``."""
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    if version not in versions:
        raise SystemExit(f"trim_crd: the CRD has versions {sorted(versions)}, not {version!r}")
    schema = strip_descriptions(versions[version]["schema"]["openAPIV3Schema"])
    schema.get("properties", {}).pop("status", None)
    for path in pod_templates:
        open_subtree(schema, path)
    return {
        "x-source": {
            "crd": crd["metadata"]["name"],
            "group": crd["spec"]["group"],
            "kind": crd["spec"]["names"]["kind"],
            "version": version,
            "opened": pod_templates,
        },
        **schema,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd", type=Path)
    parser.add_argument("version")
    parser.add_argument("out", type=Path)
    parser.add_argument("--pod-template", action="append", default=[])
    args = parser.parse_args(argv)
    docs = [d for d in yaml.safe_load_all(args.crd.read_text()) if d]
    if len(docs) != 1 or docs[0].get("kind") != "CustomResourceDefinition":
        print(f"trim_crd: {args.crd} is not one CustomResourceDefinition", file=sys.stderr)
        return 2
    trimmed = trim(docs[0], args.version, args.pod_template)
    args.out.write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
