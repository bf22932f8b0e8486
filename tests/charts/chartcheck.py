"""Lints, renders, validates and inspects the suite's Helm charts.

Helm v4's own engine (helm-python-sdk) lints every chart strictly and renders
each with its defaults and with the value sets in tests/charts/values; every
rendered object is validated strictly by kubernetes-validate against the
oldest and newest Kubernetes the charts claim; then the rendered content is
checked against what the binaries need (see the ``check_*`` functions).

Run: .tools/charts-venv/bin/python tests/charts/chartcheck.py   (or `just charts`)
"""

from __future__ import annotations

import argparse
import base64
import functools
import math
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import helm_python as helm
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import yaml

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "helm"
VALUE_SETS = Path(__file__).resolve().parent / "values"

SERVICE_CHARTS = ["user-service", "order-service", "edge-gateway"]
UMBRELLA = "suite"
LIBRARY = "suite-common"
# Oldest and newest Kubernetes the charts claim (kubeVersion ">=1.30.0-0": the
# preStop sleep action is on by default from 1.30); the newest is the newest
# kubernetes-validate bundles.
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
NAMESPACE = "shop"
RELEASE = "suite"

# Kinds from CRDs (cert-manager, Prometheus operator, Istio): kubernetes-validate
# has no schemas for them; the checks below inspect what the charts rely on.
CRD_KINDS = {"Certificate", "ServiceMonitor", "PrometheusRule", "VirtualService", "DestinationRule"}

# Who may reach each service's gRPC port: the callers of the architecture
# (client -> gateway -> order -> user), written here independently of the charts.
EXPECTED_GRPC_CALLERS: dict[str, set[str] | None] = {
    "user-service": {"order-service", "edge-gateway"},
    "order-service": {"edge-gateway"},
    "edge-gateway": None,  # the suite's only door: open to every source
}
MIGRATING_SERVICES = {"user-service", "order-service"}
SECRET_ENV = {"DATABASE_URL", "REDIS_URL", "PAGE_TOKEN_SECRET", "JWT_HS256_SECRET"}
REQUIRED_LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
]
# Metric families the binaries serve on /metrics today (shared/grpc layers/metrics.rs
# and client/dependency.rs, shared/db, shared/cache, shared/tls metrics.rs,
# services/edge-gateway/src/metrics.rs), with the suffixes Prometheus sees.
KNOWN_METRICS = {
    "rpc_server_call_duration_seconds_bucket",
    "rpc_server_call_duration_seconds_count",
    "rpc_server_call_duration_seconds_sum",
    "rpc_server_active_calls",
    "rpc_server_max_active_calls",
    "rpc_client_call_duration_seconds_bucket",
    "rpc_client_call_duration_seconds_count",
    "rpc_client_call_duration_seconds_sum",
    "suite_build_info",
    "telemetry_spans_exported_total",
    "telemetry_spans_export_failed_total",
    "telemetry_spans_dropped_total",
    "client_attempts_total",
    "client_retries_total",
    "client_rejected_calls_total",
    "client_circuit_state",
    "db_pool_connections_open",
    "db_pool_connections_idle",
    "db_pool_connections_in_use",
    "db_pool_connections_max",
    "cache_lookups_total",
    "cache_errors_total",
    "tls_server_handshakes_total",
    "tls_credential_reloads_total",
    "tls_certificate_expiry_timestamp_seconds",
    "gateway_auth_failures_total",
    "gateway_rate_limited_total",
    "gateway_upstream_errors_total",
    "gateway_jwks_refreshes_total",
}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile", "by", "without",
    "and", "or", "unless", "on", "ignoring", "time", "le", "bool", "offset", "abs", "clamp_min", "clamp_max",
}


class StrictLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass
class Obj:
    """One rendered Kubernetes object and the template it came from."""

    source: str
    body: dict

    @property
    def kind(self) -> str:
        return self.body.get("kind", "")

    @property
    def name(self) -> str:
        return self.body.get("metadata", {}).get("name", "")

    @property
    def annotations(self) -> dict:
        return self.body.get("metadata", {}).get("annotations") or {}

    @property
    def is_hook(self) -> bool:
        return "helm.sh/hook" in self.annotations

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} ({self.source})"


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def fail(self, context: str, message: str) -> None:
        self.failures.append(f"{context}: {message}")

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


# ---------------------------------------------------------------- helm engine


def build_dependencies(helm_dir: Path = HELM) -> None:
    """Packages the local charts into their dependents' charts/ (library first, umbrella last)."""
    for chart in SERVICE_CHARTS + [UMBRELLA]:
        helm.dependency_update(str(helm_dir / chart), skip_refresh=True)


def load_values(path: Path) -> dict:
    with open(path) as f:
        return yaml.load(f, Loader=StrictLoader) or {}


def lint(chart_dir: Path, values: dict | None, kube_version: str) -> list[str]:
    """Helm's strict lint; warnings and errors are failures, info (icon) is not."""
    report = helm.lint(str(chart_dir), values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}")
    return [f"[{m['path']}] {m['error'].strip()}" for m in report["messages"] if m["severity"] >= 2]


def render(chart_dir: Path, values: dict | None) -> list[Obj]:
    """Renders like `helm install` (hooks and tests included) and parses every document."""
    with helm.Chart.load(str(chart_dir)) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for source, text in sorted(manifests.items()):
        if source.endswith("NOTES.txt"):
            continue
        for doc in yaml.load_all(text, Loader=StrictLoader):
            if doc:
                objects.append(Obj(source, doc))
    return objects


# ---------------------------------------------------------------- kubernetes-validate

# The library re-reads a schema file for every object; the files never change.
kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)


def validate(objects: list[Obj], versions: Iterable[str], report: Report, context: str) -> None:
    for obj in objects:
        if obj.kind in CRD_KINDS:
            report.count("CRD objects checked by assertions only")
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj.body, version, strict=True)
                report.count("object validations")
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                report.fail(context, f"{obj} is not a valid Kubernetes {version} object: {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                report.fail(context, f"{obj}: {error.message}")


# ---------------------------------------------------------------- helpers


def pod_spec(obj: Obj) -> dict | None:
    if obj.kind in ("Deployment", "Job"):
        return obj.body["spec"]["template"]["spec"]
    if obj.kind == "Pod":
        return obj.body["spec"]
    return None


def pod_labels(obj: Obj) -> dict:
    if obj.kind in ("Deployment", "Job"):
        return obj.body["spec"]["template"]["metadata"].get("labels") or {}
    return obj.body["metadata"].get("labels") or {}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def service_of(obj: Obj) -> str:
    return (obj.body.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/name", "")


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o.kind == kind]


def hook_phases(obj: Obj) -> set[str]:
    return {p.strip() for p in obj.annotations.get("helm.sh/hook", "").split(",") if p.strip()}


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------- assertions


def check_labels(objects: list[Obj], report: Report, ctx: str) -> None:
    for obj in objects:
        labels = obj.body.get("metadata", {}).get("labels") or {}
        missing = [label for label in REQUIRED_LABELS if not labels.get(label)]
        if missing:
            report.fail(ctx, f"{obj} lacks labels {missing}")
        if labels.get("app.kubernetes.io/part-of", "suite") != "suite":
            report.fail(ctx, f"{obj} is not part-of suite")
        if obj.kind in ("Deployment", "Job"):
            missing = [label for label in REQUIRED_LABELS if not pod_labels(obj).get(label)]
            if missing:
                report.fail(ctx, f"{obj} pod template lacks labels {missing}")
        report.count("label checks")


def check_probes(objects: list[Obj], report: Report, ctx: str) -> None:
    """gRPC probes on the admin port: liveness and startup on `liveness`, readiness on ""."""
    for dep in by_kind(objects, "Deployment"):
        for c in pod_spec(dep)["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            admin = ports.get("admin")
            if admin is None:
                report.fail(ctx, f"{dep} container {c['name']} has no port named admin")
                continue
            if admin == ports.get("grpc"):
                report.fail(ctx, f"{dep} admin and grpc ports are the same")
            expected_service = {"startupProbe": "liveness", "livenessProbe": "liveness", "readinessProbe": ""}
            for probe_name, health_name in expected_service.items():
                probe = c.get(probe_name)
                if not probe:
                    report.fail(ctx, f"{dep} container {c['name']} has no {probe_name}")
                    continue
                handlers = {"grpc", "httpGet", "tcpSocket", "exec"} & probe.keys()
                if handlers != {"grpc"}:
                    report.fail(ctx, f"{dep} {probe_name} is not a native gRPC probe (has {sorted(handlers)})")
                    continue
                if probe["grpc"].get("port") != admin:
                    report.fail(
                        ctx,
                        f"{dep} {probe_name} probes port {probe['grpc'].get('port')}, not the admin port {admin} "
                        f"(container ports: {ports})",
                    )
                if probe["grpc"].get("service", "") != health_name:
                    report.fail(
                        ctx,
                        f"{dep} {probe_name} asks for health {probe['grpc'].get('service', '')!r}, "
                        f"expected {health_name!r} (liveness must not follow dependencies; readiness must)",
                    )
            report.count("probe checks")


def check_security(objects: list[Obj], report: Report, ctx: str) -> None:
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        pod_sc = spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            report.fail(ctx, f"{obj} mounts a service-account token (automountServiceAccountToken is not false)")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            report.fail(ctx, f"{obj} uses host namespaces")
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext") or {}
            where = f"{obj} container {c['name']}"
            if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True):
                report.fail(ctx, f"{where} may run as root (runAsNonRoot is not true)")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) in (0, None):
                report.fail(ctx, f"{where} has no non-zero runAsUser")
            if sc.get("readOnlyRootFilesystem") is not True:
                report.fail(ctx, f"{where} has a writable root filesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                report.fail(ctx, f"{where} allows privilege escalation")
            if sc.get("privileged"):
                report.fail(ctx, f"{where} is privileged")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
                report.fail(ctx, f"{where} does not drop all capabilities (capabilities: {caps})")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                report.fail(ctx, f"{where} seccomp profile is {seccomp!r}, not RuntimeDefault")
            report.count("securityContext checks")


def check_rollout_and_drain(objects: list[Obj], report: Report, ctx: str) -> None:
    """RollingUpdate; the grace period covers the preStop delay plus the binary's drain."""
    for dep in by_kind(objects, "Deployment"):
        strategy = dep.body["spec"].get("strategy") or {}
        if strategy.get("type") != "RollingUpdate" or not strategy.get("rollingUpdate"):
            report.fail(ctx, f"{dep} is not a RollingUpdate with maxSurge/maxUnavailable")
        spec = pod_spec(dep)
        for c in spec["containers"]:
            env = env_of(c)
            drain_ms = env.get("SHUTDOWN_GRACE_MS", {}).get("value")
            if drain_ms is None:
                report.fail(ctx, f"{dep} sets no SHUTDOWN_GRACE_MS; the grace period cannot be checked against it")
                continue
            pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
            if pre_stop is None:
                report.fail(ctx, f"{dep} has no preStop sleep before SIGTERM")
                continue
            needed = pre_stop + math.ceil(int(drain_ms) / 1000) + 1
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace < needed:
                report.fail(
                    ctx,
                    f"{dep} terminationGracePeriodSeconds {grace} < preStop {pre_stop}s + drain {drain_ms}ms + 1s: "
                    "pods would be killed mid-drain",
                )
            report.count("drain checks")


def check_service_ports(objects: list[Obj], report: Report, ctx: str) -> None:
    deployments = by_kind(objects, "Deployment")
    virtual_hosts = {h for vs in by_kind(objects, "VirtualService") for h in vs.body["spec"]["hosts"]}
    for svc in by_kind(objects, "Service"):
        selector = svc.body["spec"].get("selector") or {}
        targets = [d for d in deployments if matches(selector, pod_labels(d))]
        if not targets:
            report.fail(ctx, f"{svc} selects no Deployment's pods")
            continue
        container_ports = {p["name"] for d in targets for c in pod_spec(d)["containers"] for p in c.get("ports", [])}
        ports = {p["name"]: p for p in svc.body["spec"]["ports"]}
        for p in ports.values():
            if p.get("targetPort") not in container_ports:
                report.fail(ctx, f"{svc} port {p['name']} targets {p.get('targetPort')!r}, which no container exposes")
        if svc.name.endswith("-external"):
            if "admin" in ports:
                report.fail(ctx, f"{svc} exposes the admin port outside the cluster")
            continue
        if "grpc" not in ports or "admin" not in ports:
            report.fail(ctx, f"{svc} must expose the grpc and admin ports (has {sorted(ports)})")
            continue
        host = f"{svc.name}.{NAMESPACE}.svc.cluster.local"
        # Under Istio routing the port is declared TLS: the mesh cannot parse the binary's own mTLS.
        expected = "tls" if host in virtual_hosts else "grpc"
        if ports["grpc"].get("appProtocol") != expected:
            report.fail(ctx, f"{svc} grpc port appProtocol is {ports['grpc'].get('appProtocol')!r}, expected {expected!r}")
        report.count("service checks")


def check_migrations(objects: list[Obj], report: Report, ctx: str) -> None:
    """A pre-install/pre-upgrade Job runs `migrate` with the Deployment's image and database
    before the Deployment (a hook; the Deployment is not), and the pods then skip migrating."""
    secrets = {s.name: s for s in by_kind(objects, "Secret")}
    jobs = by_kind(objects, "Job")
    for dep in by_kind(objects, "Deployment"):
        service = service_of(dep)
        if service not in MIGRATING_SERVICES:
            continue
        if dep.name.endswith("-canary"):
            if env_of(pod_spec(dep)["containers"][0]).get("MIGRATE_ON_START", {}).get("value") != "false":
                report.fail(ctx, f"{dep} migrates on start beside the Job")
            continue
        if dep.is_hook:
            report.fail(ctx, f"{dep} is a hook; it must be an ordinary release object created after the pre-install hooks")
        c = pod_spec(dep)["containers"][0]
        env = env_of(c)
        migrate_on_start = env.get("MIGRATE_ON_START", {}).get("value")
        job = next((j for j in jobs if service_of(j) == service), None)
        embedded = "DATA_DIR" in env and "DATABASE_URL" not in env
        if embedded:
            if migrate_on_start != "true":
                report.fail(ctx, f"{dep} has an embedded database but does not migrate on start")
            if job:
                report.fail(ctx, f"{job} migrates a database no pod shares (embedded SQLite)")
            continue
        if job is None:
            report.fail(ctx, f"{dep} has no migration Job")
            continue
        if migrate_on_start != "false":
            report.fail(ctx, f"{dep} still migrates on start (MIGRATE_ON_START={migrate_on_start!r}) beside the Job")
        phases = hook_phases(job)
        if not {"pre-install", "pre-upgrade"} <= phases:
            report.fail(ctx, f"{job} is not a pre-install and pre-upgrade hook (hook: {sorted(phases)}): it would not run before the Deployment")
        jc = pod_spec(job)["containers"][0]
        if jc.get("args") != ["migrate"] and jc.get("command", [])[-1:] != ["migrate"]:
            report.fail(ctx, f"{job} does not run the binary's migrate subcommand (args {jc.get('args')})")
        # The newest track's schema: the canary's when there is one.
        newest = next((d for d in by_kind(objects, "Deployment") if service_of(d) == service and d.name.endswith("-canary")), dep)
        newest_image = pod_spec(newest)["containers"][0].get("image")
        if jc.get("image") != newest_image:
            report.fail(ctx, f"{job} image {jc.get('image')} is not the newest track's {newest_image}")
        if pod_spec(job).get("restartPolicy") not in ("Never", "OnFailure"):
            report.fail(ctx, f"{job} has restartPolicy {pod_spec(job).get('restartPolicy')}")
        job_db = env_of(jc).get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef")
        dep_db = env.get("DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef")
        if not job_db:
            report.fail(ctx, f"{job} reads no DATABASE_URL from a Secret")
            continue
        rendered = secrets.get(job_db["name"])
        if rendered is not None:
            # A Secret of this release must exist before the Job: only a hook with a lower weight does.
            weight = lambda o: int(o.annotations.get("helm.sh/hook-weight", "0"))
            if not (rendered.is_hook and phases <= hook_phases(rendered) and weight(rendered) < weight(job)):
                report.fail(ctx, f"{job} reads {rendered}, which is not created before it (not an earlier pre-install/pre-upgrade hook)")
            elif dep_db and dep_db["name"] in secrets:
                job_url = base64.b64decode(rendered.body["data"][job_db["key"]])
                dep_url = base64.b64decode(secrets[dep_db["name"]].body["data"][dep_db["key"]])
                if job_url != dep_url:
                    report.fail(ctx, f"{job} migrates another database than {dep} uses")
        elif dep_db != job_db:
            report.fail(ctx, f"{job} reads DATABASE_URL from {job_db}, {dep} from {dep_db}")
        report.count("migration checks")


def check_network_policies(objects: list[Obj], report: Report, ctx: str) -> None:
    """Exactly the intended callers reach each gRPC port; the gateway's is open; admin is never open."""
    for np in by_kind(objects, "NetworkPolicy"):
        service = service_of(np)
        if service not in EXPECTED_GRPC_CALLERS:
            report.fail(ctx, f"{np} belongs to no known service")
            continue
        spec = np.body["spec"]
        if not matches(spec["podSelector"].get("matchLabels") or {}, {"app.kubernetes.io/name": service, "app.kubernetes.io/instance": RELEASE}):
            report.fail(ctx, f"{np} does not select the {service} pods")
        if "Ingress" not in spec.get("policyTypes", []):
            report.fail(ctx, f"{np} does not restrict ingress")
        grpc_callers: set[str] = set()
        grpc_open = False
        for rule in spec.get("ingress", []):
            ports = {p.get("port") for p in rule.get("ports") or []}
            if not ports:
                report.fail(ctx, f"{np} has a rule for every port")
            sources = rule.get("from")
            if "admin" in ports and not sources:
                report.fail(ctx, f"{np} opens the admin port to every source")
            if "grpc" not in ports:
                continue
            if not sources:
                grpc_open = True
                continue
            for peer in sources:
                pod_sel = (peer.get("podSelector") or {}).get("matchLabels") or {}
                if "ipBlock" in peer:
                    report.fail(ctx, f"{np} admits an ipBlock to the gRPC port")
                elif "namespaceSelector" in peer:
                    report.count("extra gRPC peers (operator namespaces)")
                elif "app.kubernetes.io/name" in pod_sel:
                    grpc_callers.add(pod_sel["app.kubernetes.io/name"])
                else:
                    report.fail(ctx, f"{np} admits unnamed pods to the gRPC port: {peer}")
        expected = EXPECTED_GRPC_CALLERS[service]
        if expected is None:
            if not grpc_open:
                report.fail(ctx, f"{np}: the gateway's gRPC port must be open to clients")
        elif grpc_open:
            report.fail(ctx, f"{np} opens {service}'s gRPC port to every source; only {sorted(expected)} may call it")
        elif grpc_callers != expected:
            report.fail(ctx, f"{np} admits {sorted(grpc_callers)} to the gRPC port; expected exactly {sorted(expected)}")
        report.count("network policy checks")


def check_no_secrets_in_clear(objects: list[Obj], report: Report, ctx: str) -> None:
    secret_values = set()
    for s in by_kind(objects, "Secret"):
        for value in (s.body.get("data") or {}).values():
            decoded = base64.b64decode(value).decode(errors="replace")
            if len(decoded) >= 8:
                secret_values.add(decoded)
        for value in (s.body.get("stringData") or {}).values():
            secret_values.add(str(value))
    credential_url = re.compile(r"[a-z]+://[^/\s:@]*:[^@\s]+@")
    for cm in by_kind(objects, "ConfigMap"):
        for key, text in (cm.body.get("data") or {}).items():
            if credential_url.search(text):
                report.fail(ctx, f"{cm} key {key} holds a URL with a password")
            for value in secret_values:
                if value in text:
                    report.fail(ctx, f"{cm} key {key} holds a value that is also Secret data")
        report.count("configmap checks")
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for c in spec["containers"]:
            for name, entry in env_of(c).items():
                literal = entry.get("value", "")
                if name in SECRET_ENV and "value" in entry:
                    report.fail(ctx, f"{obj} sets {name} in clear; it must come from a Secret")
                elif credential_url.search(literal) or literal in secret_values:
                    report.fail(ctx, f"{obj} env {name} holds a credential in clear")


def check_identity(objects: list[Obj], report: Report, ctx: str) -> None:
    """The pod runs as its service's ServiceAccount; a Certificate names exactly that SPIFFE id
    and writes the Secret the pods mount (whole, no subPath, so rotations reach the binary)."""
    accounts = {sa.name for sa in by_kind(objects, "ServiceAccount")}
    certificates = {c.body["spec"]["secretName"]: c for c in by_kind(objects, "Certificate")}
    for dep in by_kind(objects, "Deployment"):
        service = service_of(dep)
        spec = pod_spec(dep)
        if spec.get("serviceAccountName") != service or service not in accounts:
            report.fail(ctx, f"{dep} does not run as its own ServiceAccount {service!r} (its SPIFFE identity)")
        c = spec["containers"][0]
        env = env_of(c)
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for var in ("TLS_CERT", "TLS_KEY", "TLS_CA"):
            path = env.get(var, {}).get("value")
            if not path:
                report.fail(ctx, f"{dep} sets no {var}")
                continue
            mount = mounts.get(str(Path(path).parent))
            if mount is None:
                report.fail(ctx, f"{dep} {var}={path} is not under a mounted volume")
                continue
            if mount.get("subPath"):
                report.fail(ctx, f"{dep} mounts {var} with subPath: rotated files would never reach the pod")
        tls_mount = mounts.get(str(Path(env.get("TLS_CERT", {}).get("value", "/x/y")).parent))
        tls_volume = volumes.get(tls_mount["name"]) if tls_mount else None
        secret_name = (tls_volume or {}).get("secret", {}).get("secretName")
        if not secret_name:
            report.fail(ctx, f"{dep} does not read its certificate from a Secret")
            continue
        cert = certificates.get(secret_name)
        if cert is not None:
            uris = cert.body["spec"].get("uris") or []
            trust_domain = uris[0].split("/")[2] if uris and uris[0].startswith("spiffe://") else "?"
            expected = f"spiffe://{trust_domain}/ns/{NAMESPACE}/sa/{service}"
            if uris != [expected]:
                report.fail(ctx, f"{cert} URI SANs {uris}; expected exactly [{expected}]")
            usages = set(cert.body["spec"].get("usages") or [])
            if not {"server auth", "client auth"} <= usages:
                report.fail(ctx, f"{cert} lacks server auth or client auth usage: {sorted(usages)}")
        report.count("identity checks")
    # The order service must expect the user service's identity in the same trust domain.
    for dep in by_kind(objects, "Deployment"):
        env = env_of(pod_spec(dep)["containers"][0])
        expected_peer = env.get("USER_SERVICE_IDENTITY", {}).get("value")
        if expected_peer is not None and not expected_peer.endswith(f"/ns/{NAMESPACE}/sa/user-service"):
            report.fail(ctx, f"{dep} expects the user service to be {expected_peer}")


def check_images(objects: list[Obj], app_versions: dict[str, str], report: Report, ctx: str, default_tags: bool) -> None:
    for dep in by_kind(objects, "Deployment"):
        service = service_of(dep)
        image = pod_spec(dep)["containers"][0]["image"]
        if ":" not in image.rsplit("/", 1)[-1]:
            report.fail(ctx, f"{dep} image {image} has no tag")
        track = dep.body["metadata"]["labels"].get("suite.io/track")
        if default_tags and track == "stable" and not image.endswith(f"/{service}:{app_versions[service]}"):
            report.fail(ctx, f"{dep} image {image} is not {service}:{app_versions[service]} (the chart's appVersion)")
        report.count("image checks")


def check_selectors(objects: list[Obj], report: Report, ctx: str) -> None:
    deployments = by_kind(objects, "Deployment")
    for dep in deployments:
        selector = dep.body["spec"]["selector"]["matchLabels"]
        if not matches(selector, pod_labels(dep)):
            report.fail(ctx, f"{dep} selector {selector} does not match its own pods")
        others = [d for d in deployments if d is not dep and matches(selector, pod_labels(d))]
        if others:
            report.fail(ctx, f"{dep} selector also matches the pods of {others[0]}")
        for tsc in pod_spec(dep).get("topologySpreadConstraints") or []:
            if not matches(tsc["labelSelector"]["matchLabels"], pod_labels(dep)):
                report.fail(ctx, f"{dep} topology spread selects other pods than its own")
    for pdb in by_kind(objects, "PodDisruptionBudget"):
        if not any(matches(pdb.body["spec"]["selector"]["matchLabels"], pod_labels(d)) for d in deployments):
            report.fail(ctx, f"{pdb} selects no pods")
    for hpa in by_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa.body["spec"]["scaleTargetRef"]["name"]
        dep = next((d for d in deployments if d.name == target), None)
        if dep is None:
            report.fail(ctx, f"{hpa} scales {target}, which is not rendered")
        elif "replicas" in dep.body["spec"]:
            report.fail(ctx, f"{dep} sets replicas while {hpa} scales it (every upgrade would reset the count)")
    for sm in by_kind(objects, "ServiceMonitor"):
        services = [s for s in by_kind(objects, "Service") if matches(sm.body["spec"]["selector"]["matchLabels"], s.body["metadata"]["labels"])]
        if not any(p["name"] == "admin" for s in services for p in s.body["spec"]["ports"]) or any(
            e.get("port") != "admin" or e.get("path") != "/metrics" for e in sm.body["spec"]["endpoints"]
        ):
            report.fail(ctx, f"{sm} does not scrape /metrics on a Service's admin port")


def check_canary(objects: list[Obj], report: Report, ctx: str) -> None:
    deployments = by_kind(objects, "Deployment")
    rules = {d.body["spec"]["host"]: d for d in by_kind(objects, "DestinationRule")}
    for vs in by_kind(objects, "VirtualService"):
        for route in vs.body["spec"].get("tcp", []) + vs.body["spec"].get("http", []):
            weights = [r.get("weight", 0) for r in route["route"]]
            if sum(weights) != 100:
                report.fail(ctx, f"{vs} route weights {weights} do not add up to 100")
            for r in route["route"]:
                host, subset = r["destination"]["host"], r["destination"].get("subset")
                rule = rules.get(host)
                labels = next((s["labels"] for s in (rule.body["spec"]["subsets"] if rule else []) if s["name"] == subset), None)
                if labels is None:
                    report.fail(ctx, f"{vs} routes to subset {subset} of {host}, which no DestinationRule defines")
                elif not any(matches(labels, pod_labels(d)) and service_of(d) == host.split(".")[0] for d in deployments):
                    report.fail(ctx, f"{vs} subset {subset} ({labels}) matches no pods of {host}")
        report.count("canary checks")


def check_alert_rules(objects: list[Obj], report: Report, ctx: str) -> None:
    for rule_obj in by_kind(objects, "PrometheusRule"):
        # The chart installs the canonical rules file (helm/alerts/), through its own copy.
        canonical = HELM / "alerts" / f"{service_of(rule_obj)}.rules.yaml"
        if canonical.is_file() and rule_obj.body["spec"] != yaml.safe_load(canonical.read_text()):
            report.fail(ctx, f"{rule_obj} does not install the rules of {canonical.relative_to(HELM.parent)}")
        service = service_of(rule_obj)
        for group in rule_obj.body["spec"]["groups"]:
            for rule in group["rules"]:
                expr = rule.get("expr", "")
                # Strip label matchers and string literals, keep identifiers followed by a selector or ( ... ).
                bare = re.sub(r'"[^"]*"', '""', expr)
                bare = re.sub(r"\{[^}]*\}", "{}", bare)
                bare = re.sub(r"\[[^\]]*\]", "[]", bare)
                bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)
                names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b", bare)) - PROMQL_WORDS
                names = {n for n in names if not re.fullmatch(r"\d+|e\d*", n)}
                unknown = names - KNOWN_METRICS
                if unknown:
                    report.fail(ctx, f"{rule_obj} alert {rule.get('alert')} uses metrics the binaries do not serve: {sorted(unknown)}")
                if f'job="{service}"' not in expr:
                    report.fail(ctx, f"{rule_obj} alert {rule.get('alert')} is not scoped to job {service}")
                if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                    report.fail(ctx, f"{rule_obj} alert {rule.get('alert')} has no severity")
                report.count("alert rule checks")


def check_tests(objects: list[Obj], report: Report, ctx: str) -> None:
    """Each service has a `helm test` pod running its own image's `healthcheck` against its
    admin port through the Service, for readiness (""), liveness and its served services."""
    deployments = {service_of(d): d for d in by_kind(objects, "Deployment") if "canary" not in d.name}
    tested = set()
    for pod in by_kind(objects, "Pod"):
        if "test" not in hook_phases(pod):
            continue
        service = service_of(pod)
        container = pod_spec(pod)["containers"][0]
        argv = container.get("command", []) + container.get("args", [])
        admin = next(
            (p["port"] for s in by_kind(objects, "Service") if s.name == service for p in s.body["spec"]["ports"] if p["name"] == "admin"),
            None,
        )
        if argv[:1] != ["healthcheck"] or "--addr" not in argv or argv[argv.index("--addr") + 1 :][:1] != [f"{service}.{NAMESPACE}.svc:{admin}"]:
            report.fail(ctx, f"{pod} does not run `healthcheck --addr {service}.{NAMESPACE}.svc:{admin}` (runs {argv})")
        names = {argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--service"}
        if not {"", "liveness"} <= names:
            report.fail(ctx, f"{pod} checks health names {sorted(names)}, not both readiness '' and 'liveness'")
        deployment = deployments.get(service)
        if deployment is not None and container.get("image") != pod_spec(deployment)["containers"][0].get("image"):
            report.fail(ctx, f"{pod} runs {container.get('image')}, not the service's own image")
        tested.add(service)
        report.count("helm test checks")
    for missing in sorted(set(deployments) - tested):
        report.fail(ctx, f"{missing} has no `helm test` health check")


# The keys the binaries accept (their TOML structs deny unknown fields):
# shared/grpc/src/authz.rs PolicyFile/RuleFile, services/edge-gateway/src/routes.rs UpstreamSpec.
TOML_KEYS = {
    "authz.toml": ({"end_user_gateways", "allow"}, "allow", {"callers", "methods"}),
    "routes.toml": ({"upstreams"}, "upstreams", {
        "name", "address", "services", "identity", "max_concurrent_calls", "breaker_failure_ratio",
        "breaker_min_requests", "breaker_window_ms", "breaker_open_ms", "breaker_half_open_probes"}),
}


def check_config_files(objects: list[Obj], report: Report, ctx: str) -> None:
    """The TOML files the binaries read parse, use only keys the binaries accept, and name
    callers and upstreams in this release's trust domain and namespace."""
    for cm in by_kind(objects, "ConfigMap"):
        for key, text in (cm.body.get("data") or {}).items():
            if key not in TOML_KEYS:
                continue
            try:
                doc = tomllib.loads(text)
            except tomllib.TOMLDecodeError as error:
                report.fail(ctx, f"{cm} {key} is not valid TOML: {error}")
                continue
            top, table, entry_keys = TOML_KEYS[key]
            if set(doc) - top:
                report.fail(ctx, f"{cm} {key} has keys the binary refuses: {sorted(set(doc) - top)}")
            for entry in doc.get(table, []):
                if set(entry) - entry_keys:
                    report.fail(ctx, f"{cm} {key} [[{table}]] has keys the binary refuses: {sorted(set(entry) - entry_keys)}")
            ids = doc.get("end_user_gateways", []) + [c for rule in doc.get("allow", []) for c in rule.get("callers", [])]
            for spiffe in ids:
                if not re.fullmatch(rf"spiffe://[a-z0-9._-]+/ns/{NAMESPACE}/sa/[a-z0-9-]+", spiffe):
                    report.fail(ctx, f"{cm} {key} names {spiffe!r}, not a SPIFFE id in namespace {NAMESPACE}")
            for upstream in doc.get("upstreams", []):
                if not upstream.get("address", "").startswith(f"{upstream.get('name')}.{NAMESPACE}.svc:"):
                    report.fail(ctx, f"{cm} {key} sends {upstream.get('name')} to {upstream.get('address')}")
            report.count("config file checks")


def check_peer_addresses(objects: list[Obj], report: Report, ctx: str) -> None:
    """Every address a binary dials to reach another service (the order service's
    USER_SERVICE_ADDR, the gateway's upstreams) is that service's Service by DNS name in this
    namespace and, where the render holds that Service, its gRPC port."""
    grpc_ports = {svc.name: p["port"] for svc in by_kind(objects, "Service") for p in svc.body["spec"]["ports"] if p["name"] == "grpc"}
    peers = []  # (who dials, the service it means, the address)
    for deployment in by_kind(objects, "Deployment"):
        for container in pod_spec(deployment)["containers"]:
            address = env_of(container).get("USER_SERVICE_ADDR", {}).get("value")
            if address is not None:
                peers.append((str(deployment), "user-service", address))
    for cm in by_kind(objects, "ConfigMap"):
        text = (cm.body.get("data") or {}).get("routes.toml")
        if text:
            for upstream in tomllib.loads(text).get("upstreams", []):
                peers.append((f"{cm} routes.toml", upstream.get("name", ""), upstream.get("address", "")))
    for who, service, address in peers:
        host, _, port = address.rpartition(":")
        if host not in (f"{service}.{NAMESPACE}.svc", f"{service}.{NAMESPACE}.svc.cluster.local") or not port.isdigit():
            report.fail(ctx, f"{who} dials {service} at {address!r}, not its Service's DNS name in {NAMESPACE}")
        elif service in grpc_ports and int(port) != grpc_ports[service]:
            report.fail(ctx, f"{who} dials {service} on port {port}, but its Service's gRPC port is {grpc_ports[service]}")
        report.count("peer address checks")


CHECKS = [
    check_config_files,
    check_peer_addresses,
    check_labels,
    check_probes,
    check_security,
    check_rollout_and_drain,
    check_service_ports,
    check_migrations,
    check_network_policies,
    check_no_secrets_in_clear,
    check_identity,
    check_selectors,
    check_canary,
    check_alert_rules,
    check_tests,
]


def inspect(objects: list[Obj], report: Report, ctx: str, app_versions: dict[str, str], default_tags: bool) -> None:
    for check in CHECKS:
        check(objects, report, ctx)
    check_images(objects, app_versions, report, ctx, default_tags)


# ---------------------------------------------------------------- driver


def render_sets(helm_dir: Path = HELM) -> list[tuple[str, Path, dict | None, bool]]:
    """(name, chart, values, default image tags) for every render the check makes."""
    sets: list[tuple[str, Path, dict | None, bool]] = [
        (f"{chart} (defaults)", helm_dir / chart, None, True) for chart in SERVICE_CHARTS + [UMBRELLA]
    ]
    for path in sorted(VALUE_SETS.glob("*.yaml")):
        values = load_values(path)
        sets.append((f"{UMBRELLA} ({path.name})", helm_dir / UMBRELLA, values, "image" not in str(values)))
        # Each service chart alone, with its section of the suite-wide file.
        for chart in SERVICE_CHARTS:
            section = dict(values.get(chart) or {})
            if "global" in values:
                section["global"] = values["global"]
            sets.append((f"{chart} ({path.name})", helm_dir / chart, section, "image" not in section))
    return sets


def app_versions(helm_dir: Path = HELM) -> dict[str, str]:
    versions = {}
    for chart in SERVICE_CHARTS:
        with open(helm_dir / chart / "Chart.yaml") as f:
            versions[chart] = str(yaml.safe_load(f)["appVersion"])
    return versions


def check_alert_rule_copies(helm_dir: Path, report: Report) -> None:
    """Each service chart's files/alerts.rules.yaml is a byte-for-byte copy of the canonical
    helm/alerts/<service>.rules.yaml, the file promtool checks and tests."""
    for chart in SERVICE_CHARTS:
        copy = helm_dir / chart / "files" / "alerts.rules.yaml"
        canonical = helm_dir / "alerts" / f"{chart}.rules.yaml"
        if not copy.is_file() or copy.read_bytes() != canonical.read_bytes():
            report.fail(f"alerts {chart}", f"{copy.relative_to(helm_dir)} is not a byte-for-byte copy of {canonical.relative_to(helm_dir)}")
        report.count("alert rule copies")


def check_all(helm_dir: Path = HELM, kube_versions: list[str] = KUBE_VERSIONS, quiet: bool = False) -> Report:
    report = Report()
    build_dependencies(helm_dir)
    say = (lambda *a: None) if quiet else print
    for chart in SERVICE_CHARTS + [UMBRELLA, LIBRARY]:
        for version in kube_versions:
            for problem in lint(helm_dir / chart, None, version):
                report.fail(f"lint {chart} (k8s {version})", problem)
            report.count("lint runs")
    check_alert_rule_copies(helm_dir, report)
    versions = app_versions(helm_dir)
    for name, chart, values, default_tags in render_sets(helm_dir):
        if chart.name == UMBRELLA and values is not None:
            for version in kube_versions:
                for problem in lint(chart, values, version):
                    report.fail(f"lint {name} (k8s {version})", problem)
                report.count("lint runs")
        try:
            objects = render(chart, values)
        except helm.HelmError as error:
            report.fail(f"render {name}", str(error).strip())
            continue
        report.count("renders")
        report.count("rendered objects", len(objects))
        validate(objects, kube_versions, report, f"validate {name}")
        inspect(objects, report, f"check {name}", versions, default_tags)
        say(f"  rendered {name}: {len(objects)} objects ({', '.join(sorted({o.kind for o in objects}))})")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    started = time.monotonic()
    print(f"helm {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), kubernetes-validate "
          f"{kubernetes_validate.__version__}, Kubernetes {', '.join(KUBE_VERSIONS)}")
    report = check_all(quiet=args.quiet)
    for what, n in sorted(report.counts.items()):
        print(f"  {n:6d} {what}")
    for failure in report.failures:
        print(f"FAIL {failure}")
    elapsed = time.monotonic() - started
    if report.failures:
        print(f"charts: {len(report.failures)} failure(s) in {elapsed:.1f}s")
        return 1
    print(f"charts: ok in {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
