"""The Kubernetes deployment files in deploy/: schemas, offline, and the links between them.

Core kinds are validated with kubernetes-validate against the Kubernetes OpenAPI schemas of
K8S_VERSION in strict mode (unknown fields fail). Custom resources (KubeRay's RayJob, Prometheus
Operator's ServiceMonitor) are validated with jsonschema against their own CRD schemas vendored
in deploy/schemas/ (made strict here), and the pod templates a RayJob embeds against the core
PodTemplateSpec schema. Then the semantic links no schema sees: Service -> pods, probes -> the
HTTP port, HPA -> Deployment and the adapter's metric, cohort -> Service DNS name and gRPC
port, kustomizations -> every file. No cluster, no network.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests must apply to (schemas shipped by kubernetes-validate)."""
NAMESPACE = "wsi-tumor"
FLEET = "kustomization.yaml"
COHORT = "cohort/kustomization.yaml"
HELM_VALUES = frozenset({"monitoring/prometheus-adapter-values.yaml"})
"""YAML files under deploy/ that are Helm values, not Kubernetes objects."""
CRD_SCHEMAS = {
    ("ray.io/v1", "RayJob"): "ray.io_rayjobs.v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.v1.json",
}
ADMIN_ONLY = {"shared-memory", "model-repository"}
"""Triton protocols that must need the admin header."""
CLIENT_NEEDS = {"health", "metadata", "inference", "model-config"}
"""Triton protocols wsi-infer uses, which must stay open."""

Doc = dict[str, Any]


# --- loading ------------------------------------------------------------------------------


def _rel(path: Path) -> str:
    return path.relative_to(DEPLOY).as_posix()


@cache
def _yaml_files() -> tuple[Path, ...]:
    return tuple(sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"}))


@cache
def _docs(rel: str) -> tuple[Doc, ...]:
    return tuple(d for d in yaml.safe_load_all((DEPLOY / rel).read_text()) if d is not None)


def _is_kustomization(rel: str) -> bool:
    return Path(rel).name == "kustomization.yaml"


def _manifest_files() -> list[str]:
    return [
        _rel(p)
        for p in _yaml_files()
        if not _is_kustomization(_rel(p)) and _rel(p) not in HELM_VALUES
    ]


def _manifests() -> list[tuple[str, Doc]]:
    return [(rel, doc) for rel in _manifest_files() for doc in _docs(rel)]


def _id(rel: str, doc: Doc) -> str:
    return f"{rel}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _kustomized(kustomization: str) -> list[Doc]:
    base = Path(kustomization).parent
    resources = _docs(kustomization)[0]["resources"]
    return [doc for res in resources for doc in _docs((base / res).as_posix())]


def _one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _fleet() -> list[Doc]:
    return _kustomized(FLEET)


def _deployment() -> Doc:
    return _one(_fleet(), "Deployment", "triton")


def _server() -> Doc:
    containers = _deployment()["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "tritonserver")


def _container_port(container: Doc, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert name in ports, f"container {container['name']} has no port named {name!r}: {ports}"
    return int(ports[name])


def _server_flags() -> dict[str, str]:
    """``--flag=value`` pairs of the tritonserver command line in the container's script."""
    script = " ".join(_server()["args"])
    assert "exec tritonserver" in script
    return {
        m.group(1): m.group(2).strip('"')
        for m in re.finditer(
            r"--([a-z][a-z-]*)=(\"[^\"]*\"|\S+)", script.split("exec tritonserver")[1]
        )
    }


def _rayjob() -> Doc:
    return _one(_kustomized(COHORT), "RayJob")


def _rayjob_pod_templates(job: Doc) -> Iterator[tuple[str, Doc]]:
    cluster = job["spec"]["rayClusterSpec"]
    yield "head", cluster["headGroupSpec"]["template"]
    for group in cluster["workerGroupSpecs"]:
        yield f"worker group {group['groupName']}", group["template"]


def _entrypoint() -> list[str]:
    return shlex.split(_rayjob()["spec"]["entrypoint"])


def _flag_values(tokens: list[str], flag: str) -> list[str]:
    values = []
    for i, token in enumerate(tokens):
        if token == flag:
            values.append(tokens[i + 1])
        elif token.startswith(flag + "="):
            values.append(token.split("=", 1)[1])
    return values


# --- schemas ------------------------------------------------------------------------------


def _strict(node: Any) -> Any:
    """A CRD schema that rejects unknown fields, as kubectl's Strict field validation does."""
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _crd_schema(file: str) -> Doc:
    return _strict(json.loads((DEPLOY / "schemas" / file).read_text()))


def _crd_errors(doc: Doc) -> list[str]:
    schema = _crd_schema(CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])])
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def _opened_templates(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """The subtrees the vendored schema left open (pod templates), found by their paths."""
    schema = _crd_schema(CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])])
    for path in schema["x-source"]["opened"]:
        nodes: list[Any] = [doc]
        for part in path.split("."):
            name = part.removesuffix("[]")
            nodes = [n[name] for n in nodes if isinstance(n, dict) and name in n]
            if part.endswith("[]"):
                nodes = [item for n in nodes for item in n]
        for node in nodes:
            yield path, node


def _validate_pod_template(template: Doc) -> None:
    kubernetes_validate.validate(
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "t"},
            "template": template,
        },
        K8S_VERSION,
        strict=True,
    )


def _validate_object_meta(meta: Doc) -> None:
    # custom resources' schemas leave metadata open; check it as the ObjectMeta it is
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}, K8S_VERSION, strict=True
    )


def _core(pairs: list[tuple[str, Doc]]) -> list[tuple[str, Doc]]:
    return [(r, d) for r, d in pairs if (d.get("apiVersion"), d.get("kind")) not in CRD_SCHEMAS]


def _custom(pairs: list[tuple[str, Doc]]) -> list[tuple[str, Doc]]:
    return [(r, d) for r, d in pairs if (d.get("apiVersion"), d.get("kind")) in CRD_SCHEMAS]


# --- every file -----------------------------------------------------------------------------


def test_every_yaml_file_is_a_manifest_a_kustomization_or_listed_helm_values() -> None:
    assert _yaml_files(), f"no YAML under {DEPLOY}"
    for path in _yaml_files():
        rel = _rel(path)
        docs = _docs(rel)
        assert docs, f"{rel} is empty"
        if rel in HELM_VALUES:
            assert len(docs) == 1 and "kind" not in docs[0], rel
        elif _is_kustomization(rel):
            assert len(docs) == 1, rel
            assert docs[0]["apiVersion"] == "kustomize.config.k8s.io/v1beta1", rel
            assert docs[0]["kind"] == "Kustomization", rel
        else:
            for doc in docs:
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), _id(rel, doc)
                assert doc["metadata"].get("name"), _id(rel, doc)
                if doc["kind"] != "Namespace":
                    assert doc["metadata"].get("namespace") == NAMESPACE, _id(rel, doc)
    assert all((DEPLOY / v).is_file() for v in HELM_VALUES)


@pytest.mark.parametrize(
    ("rel", "doc"), _core(_manifests()), ids=[_id(r, d) for r, d in _core(_manifests())]
)
def test_core_manifest_matches_the_kubernetes_schema(rel: str, doc: Doc) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(map(str, exc.path))
        pytest.fail(f"{_id(rel, doc)}: {path}: {exc.message}", pytrace=False)
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(
            f"{_id(rel, doc)}: {exc.message}; a custom resource needs a CRD_SCHEMAS entry",
            pytrace=False,
        )


@pytest.mark.parametrize(
    ("rel", "doc"), _custom(_manifests()), ids=[_id(r, d) for r, d in _custom(_manifests())]
)
def test_custom_resource_matches_its_crd_schema(rel: str, doc: Doc) -> None:
    errors = _crd_errors(doc)
    assert not errors, f"{_id(rel, doc)}:\n" + "\n".join(errors)
    _validate_object_meta(doc["metadata"])
    for path, template in _opened_templates(doc):
        try:
            _validate_pod_template(template)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            pytest.fail(f"{_id(rel, doc)}: {path}: {where}: {exc.message}", pytrace=False)


def test_the_validators_reject_unknown_fields_and_wrong_types() -> None:
    """Guards the checks above against a schema that would accept anything."""
    deployment = copy.deepcopy(_deployment())
    deployment["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)

    job = copy.deepcopy(_rayjob())
    job["spec"]["entrypointTypo"] = "x"
    assert any("entrypointTypo" in e for e in _crd_errors(job))
    job = copy.deepcopy(_rayjob())
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "four"
    assert _crd_errors(job)
    del job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    assert any("groupName" in e for e in _crd_errors(job))

    template = copy.deepcopy(dict(_rayjob_pod_templates(_rayjob()))["head"])
    template["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_pod_template(template)

    monitor = copy.deepcopy(_one(_fleet(), "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert _crd_errors(monitor)


def test_kustomizations_list_every_manifest_exactly_once() -> None:
    kustomizations = [_rel(p) for p in _yaml_files() if _is_kustomization(_rel(p))]
    assert FLEET in kustomizations and COHORT in kustomizations
    listed: list[str] = []
    for k in kustomizations:
        spec = _docs(k)[0]
        assert spec["namespace"] == NAMESPACE, k
        base = Path(k).parent
        for res in spec["resources"]:
            path = (base / res).as_posix()
            assert (DEPLOY / path).is_file(), f"{k} lists {res}, which does not exist"
            listed.append(path)
    assert sorted(listed) == sorted(set(listed)), "a manifest is listed twice"
    assert sorted(listed) == sorted(_manifest_files()), "every manifest in one kustomization"
    assert _one(_fleet(), "Namespace")["metadata"]["name"] == NAMESPACE


def test_kustomize_images_equal_the_images_in_the_files() -> None:
    """`images:` renames nothing: the raw files and `kubectl apply -k` deploy the same."""
    for k in (FLEET, COHORT):
        images = []
        for doc in _kustomized(k):
            images += re.findall(r"'image': '([^']+)'", str(doc))
        for entry in _docs(k)[0].get("images", []):
            wanted = f"{entry.get('newName', entry['name'])}:{entry['newTag']}"
            used = {i for i in images if i.rsplit(":", 1)[0] == entry["name"]}
            assert used == {wanted}, f"{k}: {entry['name']} is {used} in the files, {wanted} here"


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("kustomization", [FLEET, COHORT, "loader/kustomization.yaml"])
def test_kustomize_builds_exactly_the_files(kustomization: str) -> None:
    """What `kubectl apply -k` sends equals the files (where kubectl or kustomize is installed)."""
    command = _kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    folder = DEPLOY / Path(kustomization).parent
    run = subprocess.run([*command, str(folder)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    built = [d for d in yaml.safe_load_all(run.stdout) if d]

    def key(doc: Doc) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    assert sorted(map(key, built)) == sorted(map(key, _kustomized(kustomization)))
    files = {key(d): d for d in _kustomized(kustomization)}
    for doc in built:
        assert doc == files[key(doc)], f"{kustomization}: kustomize changes {key(doc)}"


# --- the server fleet -------------------------------------------------------------------------


def test_services_select_the_triton_pods_and_name_their_ports() -> None:
    deployment = _deployment()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    services = [d for d in _fleet() if d["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"triton", "triton-metrics"}
    for svc in services:
        assert svc["spec"]["selector"].items() <= labels.items(), svc["metadata"]["name"]
        for port in svc["spec"]["ports"]:
            _container_port(_server(), port["targetPort"])
    triton = _one(services, "Service", "triton")
    assert {p["targetPort"] for p in triton["spec"]["ports"]} == {"grpc", "http"}
    metrics = _one(services, "Service", "triton-metrics")
    assert [p["targetPort"] for p in metrics["spec"]["ports"]] == ["metrics"]


def test_probes_hit_triton_health_endpoints_on_the_http_port() -> None:
    server = _server()
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    flags = _server_flags()
    assert int(flags["http-port"]) == _container_port(server, "http")
    assert int(flags["grpc-port"]) == _container_port(server, "grpc")


def test_each_server_pod_gets_one_gpu() -> None:
    resources = _server()["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == 1
    # an extended resource's request, when given, must equal its limit
    assert int(resources["requests"].get("nvidia.com/gpu", 1)) == 1


def test_server_flags_lock_down_admin_protocols_and_model_control() -> None:
    flags = _server_flags()
    assert flags["model-control-mode"] == "none"
    assert flags["strict-readiness"] == "true"
    assert flags["allow-metrics"] == "true"
    assert int(flags["metrics-port"]) == _container_port(_server(), "metrics")
    script = " ".join(_server()["args"])
    admin = re.search(r'admin="([^"]+)"', script)
    assert admin, "the script defines the admin protocol group"
    protocols = set(admin.group(1).split(":", 1)[0].split(","))
    assert protocols >= ADMIN_ONLY
    assert not protocols & CLIENT_NEEDS, "wsi-infer needs these open"
    assert flags["grpc-restricted-protocol"] == "$admin"
    assert flags["http-restricted-api"] == "$admin"
    # the token comes from the optional Secret, else is random: never a fixed string
    token = next(e for e in _server()["env"] if e["name"] == "TRITON_ADMIN_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "/dev/urandom" in script


def test_server_memory_has_the_local_servers_allocator_and_pool_bounds() -> None:
    """The shared server runs with wsi_tumor.serving.memory's settings (docs/reliability.md)."""
    from wsi_tumor.serving.memory import (
        GLIBC_TUNING,
        JEMALLOC_CONF,
        LIBRARIES,
        largest_execution_bytes,
        pool_settings,
    )

    pool = pool_settings()
    head, command = " ".join(_server()["args"]).split("exec tritonserver")
    assert re.findall(r"--backend-config=python,(\S+)", command) == [
        f"shm-default-byte-size={pool.default_bytes}",
        f"shm-growth-byte-size={pool.growth_bytes}",
    ]
    # HTTP bodies up to the largest valid request (in MiB), like gRPC's, which has no limit
    largest = -(-max(largest_execution_bytes().values()) // 2**20) * 2**20
    assert _server_flags()["http-max-input-size"] == str(largest)
    # no file, a pool region included, grows past the ceiling (ulimit -f counts KiB)
    assert f"ulimit -f {pool.ceiling_bytes // 1024}" in head and "trap '' XFSZ" in head
    assert f"-linux-gnu/{LIBRARIES['jemalloc']}" in head and 'LD_PRELOAD="$jemalloc"' in head
    assert f'MALLOC_CONF="{JEMALLOC_CONF}"' in head
    assert all(f"{key}={value}" in head for key, value in GLIBC_TUNING.items())
    # /dev/shm holds every Python-backend region at its ceiling (5 with python-onnxruntime)
    spec = _deployment()["spec"]["template"]["spec"]
    shm = next(m["name"] for m in _server()["volumeMounts"] if m["mountPath"] == "/dev/shm")
    size = next(v for v in spec["volumes"] if v["name"] == shm)["emptyDir"]["sizeLimit"]
    assert size.endswith("Gi") and int(size[:-2]) * 2**30 >= 5 * pool.ceiling_bytes


def test_triton_release_carries_the_http_fixes_of_2_65_and_2_66() -> None:
    """26.01 = Triton 2.65 (decompression limit), 26.02 = 2.66 (HTTP bounds checks, output
    size guard); deploy/README.md says which release is pinned and why."""
    (entry,) = [i for i in _docs(FLEET)[0]["images"] if i["name"].endswith("tritonserver")]
    year, month = map(int, entry["newTag"].removesuffix("-py3").split("."))
    assert (year, month) >= (26, 2)
    assert entry["newTag"] in (DEPLOY / "README.md").read_text()


def test_model_repository_is_the_read_only_models_volume() -> None:
    spec = _deployment()["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in _server()["volumeMounts"]}
    repository = _server_flags()["model-repository"]
    assert mounts[repository]["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == mounts[repository]["name"])
    claim = volume["persistentVolumeClaim"]["claimName"]
    pvc = _one(_fleet(), "PersistentVolumeClaim", claim)
    assert set(pvc["spec"]["accessModes"]) & {"ReadWriteMany", "ReadOnlyMany"}


def test_python_models_get_wsi_tumor_with_numpy_below_2() -> None:
    spec = _deployment()["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["image"] == _server()["image"]
    install = " ".join(init["args"])
    target = re.search(r"pip install .*--target (\S+)", install)
    assert target and '"numpy<2"' in install and "--no-deps" in install
    env = {e["name"]: e.get("value") for e in _server()["env"]}
    assert env["PYTHONPATH"] == target.group(1)
    init_mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    server_mounts = {m["mountPath"]: m["name"] for m in _server()["volumeMounts"]}
    assert init_mounts[target.group(1)] == server_mounts[target.group(1)]
    requirement = next(e["value"] for e in init["env"] if e["name"] == "WSI_TUMOR_REQUIREMENT")
    assert requirement.startswith("wsi-tumor")
    # the Python backend passes tensors through /dev/shm: it must be bigger than the default
    shm = server_mounts["/dev/shm"]
    volume = next(v for v in spec["volumes"] if v["name"] == shm)
    assert volume["emptyDir"]["medium"] == "Memory"


def test_hpa_scales_the_deployment_on_the_adapters_queue_time_metric() -> None:
    hpa = _one(_fleet(), "HorizontalPodAutoscaler")
    deployment = _deployment()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    values = _docs("monitoring/prometheus-adapter-values.yaml")[0]
    (rule,) = values["rules"]["custom"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert "nv_inference_queue_duration_us" in rule["seriesQuery"]
    assert f'namespace="{NAMESPACE}"' in rule["seriesQuery"]
    for series in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
        assert series + "{<<.LabelMatchers>>}" in rule["metricsQuery"]
    assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"


def test_servicemonitor_scrapes_the_metrics_service() -> None:
    monitor = _one(_fleet(), "ServiceMonitor")
    metrics = _one(_fleet(), "Service", "triton-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    )
    triton = _one(_fleet(), "Service", "triton")
    assert (
        not monitor["spec"]["selector"]["matchLabels"].items()
        <= triton["metadata"]["labels"].items()
    )
    ports = {p["name"] for p in metrics["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


def test_network_policy_opens_grpc_to_the_namespace_and_metrics_to_monitoring_only() -> None:
    policy = _one(_fleet(), "NetworkPolicy")
    labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    by_port: dict[str, list[Doc]] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).extend(rule["from"])
    assert {"podSelector": {}} in by_port["grpc"]
    assert all("namespaceSelector" in peer for peer in by_port["metrics"])


def test_pods_meet_the_restricted_pod_security_basics() -> None:
    specs = [("triton", _deployment()["spec"]["template"]["spec"])]
    specs += [("loader", d["spec"]) for d in _manifests_of_kind("Pod")]
    specs += [(name, t["spec"]) for name, t in _rayjob_pod_templates(_rayjob())]
    specs += [("submitter", _rayjob()["spec"]["submitterPodTemplate"]["spec"])]
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for c in spec["containers"] + spec.get("initContainers", []):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert "memory" in c["resources"]["limits"], (name, c["name"])


def _manifests_of_kind(kind: str) -> list[Doc]:
    return [d for _, d in _manifests() if d["kind"] == kind]


# --- the cohort -------------------------------------------------------------------------------


def test_cohort_calls_wsi_infer_on_the_triton_service_grpc_port() -> None:
    tokens = _entrypoint()
    assert tokens[0] == "wsi-infer"
    triton = _one(_fleet(), "Service", "triton")
    grpc = next(p for p in triton["spec"]["ports"] if p["targetPort"] == "grpc")
    assert grpc["port"] == _container_port(_server(), "grpc")
    name = triton["metadata"]["name"]
    hosts = {f"{name}.{NAMESPACE}.svc", f"{name}.{NAMESPACE}.svc.cluster.local"}
    urls = _flag_values(tokens, "--url")
    assert urls, "the cohort names the Triton Service with --url"
    for url in urls:
        host, port = url.rsplit(":", 1)
        assert host in hosts and int(port) == grpc["port"], url


def test_cohort_reads_and_writes_on_the_shared_data_volume_in_every_ray_pod() -> None:
    tokens = _entrypoint()
    slides = []
    for token in tokens[1:]:
        if token.startswith("--"):
            break
        slides.append(token)
    (out,) = _flag_values(tokens, "--out")
    assert slides, "slides come first: wsi-infer SLIDES... --flags"
    claims = set()
    for where, template in _rayjob_pod_templates(_rayjob()):
        spec = template["spec"]
        (ray,) = [c for c in spec["containers"] if c["name"].startswith("ray-")]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for path in [*slides, out]:
            mount = next(
                (m for m in ray["volumeMounts"] if Path(path).is_relative_to(m["mountPath"])), None
            )
            assert mount and not mount.get("readOnly"), f"{where}: {path} is not on a volume"
            claims.add(volumes[mount["name"]]["persistentVolumeClaim"]["claimName"])
    (claim,) = claims
    pvc = _one(_fleet(), "PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    server_volumes = _deployment()["spec"]["template"]["spec"]["volumes"]
    server_claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in server_volumes
        if "persistentVolumeClaim" in v
    }
    assert claim not in server_claims, "slides and outputs live apart from the model repository"


def test_cohort_ray_version_and_image_agree_with_the_dockerfile() -> None:
    dockerfile = (DEPLOY / "images" / "cohort.Dockerfile").read_text()
    ray = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-", dockerfile, re.M)
    assert ray and _rayjob()["spec"]["rayClusterSpec"]["rayVersion"] == ray.group(1)
    assert f'"ray[default]=={ray.group(1)}"' in dockerfile
    assert '"numpy<2"' in dockerfile
    tag = re.search(r'"wsi-tumor==([^"]+)"', dockerfile)
    (entry,) = _docs(COHORT)[0]["images"]
    assert tag and entry["newTag"] == tag.group(1)


def test_cohort_entrypoint_parses_with_the_wsi_infer_parser() -> None:
    from wsi_tumor.client.config import build_parser

    parser = build_parser()
    known = {s for action in parser._actions for s in action.option_strings}
    tokens = _entrypoint()
    unknown = sorted({t.split("=")[0] for t in tokens if t.startswith("--")} - known)
    if unknown:
        pytest.skip(f"wsi-infer has no {unknown} yet")
    parser.parse_args(tokens[1:])
