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
import copy
import functools
import json
import math
import re
import sys
import time
import tomllib
import urllib.parse
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
# The services that dial others (the order service the user service, the gateway both);
# by default each dials its peers' headless Service, <name>-headless, whose name resolves
# to every ready pod, and its binary balances each call over them.
CALLERS = {"order-service", "edge-gateway"}
HEADLESS_SUFFIX = "-headless"
# The binaries' own defaults (shared/grpc/src/config.rs, the callers' discovery), which the
# charts' defaults must keep: connections age out after 5 minutes (+/-10%), calls on an aged
# connection may run 30 s more, and callers resolve their peers' names every 30 s.
CONNECTION_DEFAULTS = {"MAX_CONNECTION_AGE_MS": 300000, "MAX_CONNECTION_AGE_GRACE_MS": 30000, "RESOLVE_INTERVAL_MS": 30000}
# OTLP headers carry a hosted backend's API key (both names: the binary prefers the _TRACES_ one).
OTLP_HEADER_VARS = {"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"}
SECRET_ENV = {"DATABASE_URL", "REDIS_URL", "PAGE_TOKEN_SECRET", "JWT_HS256_SECRET"} | OTLP_HEADER_VARS
# Trace settings the binaries accept (shared/telemetry/src/tracing_config.rs); any other
# value stops them at start-up with exit 64, so no render may hold one.
OTLP_PROTOCOLS = {"grpc", "http/protobuf"}
OTLP_COMPRESSIONS = {"gzip", "none"}
SAMPLERS = {"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"}
RATIO_SAMPLERS = {"traceidratio", "parentbased_traceidratio"}
PROPAGATORS = {"tracecontext", "baggage", "none"}
BATCH_VARS = {"OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"}
# What the charts sample with unless told otherwise: a tenth of the new traces, and the
# caller's decision for continued ones (exporting every call costs ten times as much).
DEFAULT_SAMPLING = ("parentbased_traceidratio", 0.1)
# The span flush after the drain when nothing says otherwise (TELEMETRY_SHUTDOWN_TIMEOUT_MS).
DEFAULT_SPAN_FLUSH_MS = 3000
# Resource attributes that must come from the pod itself through the downward API.
DOWNWARD_ATTRIBUTES = {"k8s.namespace.name": "metadata.namespace", "k8s.pod.name": "metadata.name", "service.instance.id": "metadata.name"}
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


def selects(selector: dict | None, labels: dict) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects these labels; {} selects all."""
    selector = selector or {}
    if not matches(selector.get("matchLabels") or {}, labels):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and key in labels and labels[key] in values):
            return False
        if (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


@dataclass
class Peer:
    """One address a binary dials to reach another service of the suite."""

    who: str  # the object that holds the address
    caller: str  # the service that dials
    service: str  # the service it means
    address: str


def dialled_peers(objects: list[Obj]) -> list[Peer]:
    """The order service's USER_SERVICE_ADDR and the gateway's upstreams (routes.toml)."""
    peers = []
    for deployment in by_kind(objects, "Deployment"):
        for container in pod_spec(deployment)["containers"]:
            address = env_of(container).get("USER_SERVICE_ADDR", {}).get("value")
            if address is not None:
                peers.append(Peer(str(deployment), service_of(deployment), "user-service", address))
    for cm in by_kind(objects, "ConfigMap"):
        text = (cm.body.get("data") or {}).get("routes.toml")
        if text:
            for upstream in tomllib.loads(text).get("upstreams", []):
                peers.append(Peer(f"{cm} routes.toml", service_of(cm), upstream.get("name", ""), upstream.get("address", "")))
    return peers


def service_host(address: str) -> tuple[str | None, int | None]:
    """(Service name, port) of a host:port naming a Service by DNS name in this namespace."""
    host, _, port = address.rpartition(":")
    for suffix in (f".{NAMESPACE}.svc", f".{NAMESPACE}.svc.cluster.local"):
        if host.endswith(suffix) and "." not in host[: -len(suffix)] and port.isdigit():
            return host[: -len(suffix)], int(port)
    return None, int(port) if port.isdigit() else None


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
            # After the drain an exporting binary waits for its last spans to leave.
            flush = ""
            if otlp_setting(env, "ENDPOINT")[1]:
                flush_ms = env.get("TELEMETRY_SHUTDOWN_TIMEOUT_MS", {}).get("value", str(DEFAULT_SPAN_FLUSH_MS))
                needed += math.ceil(int(flush_ms) / 1000)
                flush = f" + span flush {flush_ms}ms"
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace < needed:
                report.fail(
                    ctx,
                    f"{dep} terminationGracePeriodSeconds {grace} < preStop {pre_stop}s + drain {drain_ms}ms{flush} + 1s: "
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
        headless = svc.name.endswith(HEADLESS_SUFFIX)
        if headless and "grpc" not in ports:
            report.fail(ctx, f"{svc} must expose the grpc port (has {sorted(ports)})")
            continue
        if not headless and ("grpc" not in ports or "admin" not in ports):
            report.fail(ctx, f"{svc} must expose the grpc and admin ports (has {sorted(ports)})")
            continue
        # The headless Service selects the same pods: under Istio its port is declared TLS too.
        host = f"{svc.name.removesuffix(HEADLESS_SUFFIX) if headless else svc.name}.{NAMESPACE}.svc.cluster.local"
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
                services = (upstream.get("name"), f"{upstream.get('name')}{HEADLESS_SUFFIX}")
                if not any(upstream.get("address", "").startswith(f"{name}.{NAMESPACE}.svc:") for name in services):
                    report.fail(ctx, f"{cm} {key} sends {upstream.get('name')} to {upstream.get('address')}")
            report.count("config file checks")


def expected_discovery(values: dict) -> dict:
    """What a caller's values ask for, written here independently of the templates: its peers'
    headless Services unless discovery.headless is false; an explicit address (userService.address,
    an upstream's address) instead of either."""
    explicit = {}
    users = values.get("userService")
    if users is not None:
        explicit[users.get("serviceName") or "user-service"] = users.get("address") or ""
    for upstream in (values.get("routes") or {}).get("upstreams") or []:
        explicit[upstream.get("name", "")] = upstream.get("address") or ""
    discovery = values.get("discovery") or {}
    headless = str(discovery.get("headless", True)).lower() == "true"  # "false" means false, schema or not
    return {"headless": headless, "resolveIntervalMs": discovery.get("resolveIntervalMs"), "explicit": explicit}


def check_peer_addresses(objects: list[Obj], report: Report, ctx: str, values: dict[str, dict] | None = None) -> None:
    """Every address a binary dials to reach another service (the order service's
    USER_SERVICE_ADDR, the gateway's upstreams) is, by DNS name in this namespace, that
    service's headless Service (the default: the binary balances each call over every ready
    pod the name resolves to), or its ClusterIP Service when the caller's discovery.headless
    is false; an explicit address in the values is taken as it is, and must still name one of
    the two. Where the render holds the service, the Service exists and the address has its
    gRPC port; and no caller dials the headless Service of a service whose Istio canary
    splits calls by weight (the VirtualService applies to the ClusterIP Service's host only).
    `values` are each service's values in the render (service_values)."""
    services = {svc.name: svc for svc in by_kind(objects, "Service")}
    rendered = {service_of(d) for d in by_kind(objects, "Deployment")}
    virtual_hosts = {h for vs in by_kind(objects, "VirtualService") for h in vs.body["spec"]["hosts"]}
    for peer in dialled_peers(objects):
        report.count("peer address checks")
        want = expected_discovery((values or {}).get(peer.caller) or {})
        headless_name = peer.service + HEADLESS_SUFFIX
        explicit = want["explicit"].get(peer.service, "")
        if explicit:
            allowed, described = {peer.service, headless_name}, f"one of its Services' DNS names in {NAMESPACE}"
            if peer.address != explicit:
                report.fail(ctx, f"{peer.who} dials {peer.service} at {peer.address!r}; the values ask for {explicit!r}")
        elif want["headless"]:
            allowed, described = {headless_name}, f"its headless Service's DNS name in {NAMESPACE} ({headless_name})"
        else:
            allowed = {peer.service}
            described = f"its ClusterIP Service's DNS name in {NAMESPACE} ({peer.service}; {peer.caller}'s discovery.headless is false)"
        name, port = service_host(peer.address)
        if name == headless_name and f"{peer.service}.{NAMESPACE}.svc.cluster.local" in virtual_hosts:
            report.fail(
                ctx,
                f"{peer.who} dials {headless_name}, bypassing the Istio canary split of {peer.service} "
                f"(its VirtualService routes the ClusterIP Service only; set {peer.caller}'s discovery.headless false)",
            )
        if name not in allowed:
            report.fail(ctx, f"{peer.who} dials {peer.service} at {peer.address!r}, not {described}")
            continue
        svc = services.get(name)
        if svc is None:
            if peer.service in rendered:
                report.fail(ctx, f"{peer.who} dials {peer.service} at {peer.address!r}, but the render has no Service {name}")
        else:
            grpc = next((p for p in svc.body["spec"].get("ports") or [] if p.get("name") == "grpc"), None)
            if grpc is not None and port != grpc["port"]:
                report.fail(ctx, f"{peer.who} dials {peer.service} on port {port}, but its Service's gRPC port is {grpc['port']} ({name})")


def check_headless_services(objects: list[Obj], report: Report, ctx: str) -> None:
    """Each service's ClusterIP Service (port-forward, grpcurl, the health test, Istio) stays a
    ClusterIP Service and has a headless twin, <name>-headless, whose DNS name callers resolve
    to the pods: clusterIP None; no unready pods published (starting and draining pods get no
    calls); the gRPC port only, the same number as the ClusterIP Service's and the pods' own (a
    headless Service translates no port: callers connect to each pod IP at the port they dial);
    the same selector, selecting exactly the pods of the service's Deployments (both tracks);
    the same appProtocol."""
    services = {s.name: s for s in by_kind(objects, "Service")}
    deployments = by_kind(objects, "Deployment")
    for svc in services.values():
        if svc.name.endswith("-external") or svc.name.endswith(HEADLESS_SUFFIX):
            continue
        spec = svc.body["spec"]
        if spec.get("clusterIP") == "None":
            report.fail(ctx, f"{svc} is headless; it must keep its cluster IP (port-forward, grpcurl, the health test and Istio use it)")
        name = svc.name + HEADLESS_SUFFIX
        headless = services.get(name)
        if headless is None:
            report.fail(ctx, f"{svc} has no headless Service {name} for callers to resolve to its pods")
            continue
        hspec = headless.body["spec"]
        if hspec.get("clusterIP") != "None" or hspec.get("type", "ClusterIP") != "ClusterIP":
            report.fail(
                ctx,
                f"{headless} is not headless (type {hspec.get('type', 'ClusterIP')}, clusterIP {hspec.get('clusterIP')!r}; expected ClusterIP "
                "with clusterIP None): its name would resolve to one virtual IP, and each caller's connection would stay on one pod",
            )
        if hspec.get("publishNotReadyAddresses"):
            report.fail(ctx, f"{headless} publishes pods that are not ready (publishNotReadyAddresses): callers would send calls to starting and draining pods")
        selector = hspec.get("selector") or {}
        if selector != (spec.get("selector") or {}):
            report.fail(ctx, f"{headless} selector {selector} is not {svc}'s {spec.get('selector')}")
        chosen = sorted(d.name for d in deployments if selector and matches(selector, pod_labels(d)))
        own = sorted(d.name for d in deployments if service_of(d) == service_of(svc))
        if chosen != own:
            report.fail(ctx, f"{headless} selects the pods of Deployments {chosen}; expected exactly {own}")
        ports = hspec.get("ports") or []
        if [p.get("name") for p in ports] != ["grpc"]:
            report.fail(ctx, f"{headless} exposes ports {[p.get('name') for p in ports]}; callers need the gRPC port only")
        grpc = next((p for p in ports if p.get("name") == "grpc"), None)
        normal = next((p for p in spec.get("ports") or [] if p.get("name") == "grpc"), None)
        if grpc is not None and normal is not None:
            if grpc["port"] != normal["port"]:
                report.fail(ctx, f"{headless} gRPC port {grpc['port']} is not {svc}'s {normal['port']}")
            target = grpc.get("targetPort", grpc["port"])
            pod_ports = {
                p["containerPort"]
                for d in deployments
                if d.name in own
                for c in pod_spec(d)["containers"]
                for p in c.get("ports") or []
                if target in (p.get("name"), p["containerPort"])
            }
            if pod_ports != {grpc["port"]}:
                report.fail(
                    ctx,
                    f"{headless} port {grpc['port']} is not the pods' gRPC port {sorted(pod_ports)}: a headless Service translates "
                    "no port, callers connect to each pod at the port they dial",
                )
            if grpc.get("appProtocol") != normal.get("appProtocol"):
                report.fail(ctx, f"{headless} gRPC port appProtocol {grpc.get('appProtocol')!r} is not {svc}'s {normal.get('appProtocol')!r}")
        report.count("headless service checks")


def admits(policy: Obj, labels: dict, port_name: str, port_number: int) -> bool:
    """Whether a NetworkPolicy's ingress rules admit a pod of this namespace with these labels
    to the selected pods' container port (by name or number, TCP)."""
    for rule in policy.body["spec"].get("ingress") or []:
        ports = rule.get("ports") or []
        if ports and not any(
            p.get("protocol", "TCP") == "TCP"
            and (p.get("port") in (port_name, port_number) or (isinstance(p.get("port"), int) and p["port"] <= port_number <= p.get("endPort", p["port"])))
            for p in ports
        ):
            continue
        sources = rule.get("from")
        if not sources:
            return True
        for peer in sources:
            if "ipBlock" in peer:
                continue
            if "namespaceSelector" in peer and not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": NAMESPACE}):
                continue
            if "podSelector" in peer and not selects(peer["podSelector"], labels):
                continue
            return True
    return False


def check_peer_network_policies(objects: list[Obj], report: Report, ctx: str) -> None:
    """Where NetworkPolicies guard a service's pods, one of them admits every pod of each
    caller that dials it (its Deployments' pod labels, both tracks) on the container port its
    connections reach: the port it dials, as it is through a headless Service (pod IPs), or
    the targetPort of a ClusterIP Service's port."""
    services = {svc.name: svc for svc in by_kind(objects, "Service")}
    deployments = by_kind(objects, "Deployment")
    policies = [np for np in by_kind(objects, "NetworkPolicy") if "Ingress" in np.body["spec"].get("policyTypes", [])]
    for peer in dialled_peers(objects):
        targets = [d for d in deployments if service_of(d) == peer.service]
        guards = [np for np in policies if any(selects(np.body["spec"]["podSelector"], pod_labels(d)) for d in targets)]
        name, port = service_host(peer.address)
        svc = services.get(name or "")
        if not guards or svc is None or port is None:
            continue  # nothing guards it, or check_peer_addresses reports the address
        if svc.body["spec"].get("clusterIP") == "None":
            target: str | int = port
        else:
            target = next((p.get("targetPort", p["port"]) for p in svc.body["spec"]["ports"] if p["port"] == port), None)
        reached = {
            (p.get("name", ""), p["containerPort"])
            for d in targets
            for c in pod_spec(d)["containers"]
            for p in c.get("ports") or []
            if target in (p.get("name"), p["containerPort"])
        }
        if not reached:
            report.fail(ctx, f"{peer.who} dials {peer.service} at {peer.address}, which reaches no port of its pods")
            continue
        for caller in [d for d in deployments if service_of(d) == peer.caller]:
            for port_name, port_number in sorted(reached):
                if not any(admits(np, pod_labels(caller), port_name, port_number) for np in guards):
                    report.fail(
                        ctx,
                        f"{', '.join(str(np) for np in guards)} does not admit {caller}'s pods to port {port_name or port_number} "
                        f"({port_number}) of {peer.service}, which {peer.caller} dials at {peer.address}",
                    )
            report.count("caller network policy checks")


def check_connection_settings(objects: list[Obj], values: dict[str, dict] | None, report: Report, ctx: str, defaults: bool = False) -> None:
    """What each binary reads for its connections: every server MAX_CONNECTION_AGE_MS and
    MAX_CONNECTION_AGE_GRACE_MS, every caller RESOLVE_INTERVAL_MS, as whole numbers of
    milliseconds it accepts (0 only where it means never), the values asked for (server.*,
    discovery.*), and with the charts' defaults the binaries' own. While connections age, the
    grace is at least GRPC_REQUEST_TIMEOUT_MS, the longest a call may run: a shorter one would
    cut calls every time a connection ages. The drain needs no relation with it: at SIGTERM the
    binary sends every connection GOAWAY and ends within SHUTDOWN_GRACE_MS whatever the age
    grace, and check_rollout_and_drain holds the grace period to that."""
    settings = {
        "MAX_CONNECTION_AGE_MS": ("server", "maxConnectionAgeMs", 0),
        "MAX_CONNECTION_AGE_GRACE_MS": ("server", "maxConnectionAgeGraceMs", 0),
        "RESOLVE_INTERVAL_MS": ("discovery", "resolveIntervalMs", 1),
    }
    for dep in by_kind(objects, "Deployment"):
        service = service_of(dep)
        env = env_of(pod_spec(dep)["containers"][0])
        want = (values or {}).get(service)
        found: dict[str, int] = {}
        for var, (section, key, minimum) in settings.items():
            if var == "RESOLVE_INTERVAL_MS" and service not in CALLERS:
                continue
            text = env.get(var, {}).get("value")
            if text is None:
                report.fail(ctx, f"{dep} sets no {var}")
                continue
            if not re.fullmatch(r"[0-9]+", text) or int(text) < minimum:
                report.fail(ctx, f"{dep} {var} {text!r} is not a whole number of milliseconds of at least {minimum}")
                continue
            found[var] = int(text)
            wanted = ((want or {}).get(section) or {}).get(key)
            if wanted is not None and found[var] != wanted:
                report.fail(ctx, f"{dep} {var} is {text}; the values ask for {section}.{key} {wanted}")
            if defaults and found[var] != CONNECTION_DEFAULTS[var]:
                report.fail(ctx, f"{dep} {var} is {text} by default; the binary's default is {CONNECTION_DEFAULTS[var]}")
        timeout = env.get("GRPC_REQUEST_TIMEOUT_MS", {}).get("value", "")
        age, grace = found.get("MAX_CONNECTION_AGE_MS"), found.get("MAX_CONNECTION_AGE_GRACE_MS")
        if age and grace is not None and timeout.isdigit() and grace < int(timeout):
            report.fail(
                ctx,
                f"{dep} MAX_CONNECTION_AGE_GRACE_MS {grace} < GRPC_REQUEST_TIMEOUT_MS {timeout}: calls still running when "
                "their connection ages out would be cut short",
            )
        report.count("connection settings checks")


# ---------------------------------------------------------------- traces


def otlp_setting(env: dict[str, dict], setting: str) -> tuple[str | None, str | None]:
    """(variable, literal value) of an OTLP exporter setting; the binary prefers the _TRACES_ form."""
    for name in (f"OTEL_EXPORTER_OTLP_TRACES_{setting}", f"OTEL_EXPORTER_OTLP_{setting}"):
        if name in env:
            return name, env[name].get("value")
    return None, None


def env_references(text: str) -> list[str]:
    """The variables a value names as $(VAR), as Kubernetes expands them ($$ is a literal $)."""
    names, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
        elif text.startswith("$(", i) and ")" in text[i:]:
            end = text.index(")", i)
            names.append(text[i + 2 : end])
            i = end + 1
        else:
            i += 1
    return names


def mounted_file(path: str, container: dict, spec: dict) -> tuple[str, str, str] | str:
    """(kind, name, key) of the Secret or ConfigMap entry a file path in the container reads,
    or why it reads none."""
    mounts = [m for m in container.get("volumeMounts") or [] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    if not mounts:
        return "is not inside a volumeMount of the container"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    relative = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    if mount.get("subPath"):
        relative = f"{mount['subPath']}/{relative}"
    volume = next((v for v in spec.get("volumes") or [] if v["name"] == mount["name"]), None)
    if volume is None:
        return f"is in mount {mount['name']}, which no volume backs"
    for kind, name_field in (("secret", "secretName"), ("configMap", "name")):
        if kind in volume:
            source = volume[kind]
            items = source.get("items")
            key = next((i["key"] for i in items if i["path"] == relative), None) if items else relative
            if key is None:
                return f"is not one of the files volume {volume['name']} projects ({[i['path'] for i in items]})"
            return kind, source.get(name_field, ""), key
    return f"is in volume {volume['name']}, which is neither a Secret nor a ConfigMap"


def check_env_references(objects: list[Obj], report: Report, ctx: str) -> None:
    """Kubernetes expands $(VAR) in a value only from variables defined before it (otherwise
    the text stays as it is), so every reference names an earlier variable of the same
    container, and no name is defined twice."""
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for c in spec.get("initContainers", []) + spec["containers"]:
            defined: set[str] = set()
            for entry in c.get("env") or []:
                name = entry["name"]
                if name in defined:
                    report.fail(ctx, f"{obj} container {c['name']} defines {name} twice")
                for ref in env_references(entry.get("value", "")):
                    if ref not in defined:
                        report.fail(ctx, f"{obj} container {c['name']} {name} references $({ref}), which is not defined before it")
                defined.add(name)
            report.count("env reference checks")


def check_otlp_headers(objects: list[Obj], report: Report, ctx: str) -> None:
    """OTLP headers (a backend's API key) only ever come from a Secret through secretKeyRef:
    never a literal, never a ConfigMap."""
    configmaps = {cm.name: cm for cm in by_kind(objects, "ConfigMap")}
    for cm in configmaps.values():
        for key, text in (cm.body.get("data") or {}).items():
            if key in OTLP_HEADER_VARS or any(var in text for var in OTLP_HEADER_VARS):
                report.fail(ctx, f"{cm} key {key} holds OTLP headers; they belong in a Secret")
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for c in spec.get("initContainers", []) + spec["containers"]:
            for entry in c.get("env") or []:
                if entry["name"] not in OTLP_HEADER_VARS:
                    continue
                ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
                if "value" in entry or not (ref.get("name") and ref.get("key")):
                    report.fail(ctx, f"{obj} sets {entry['name']} other than from a Secret (valueFrom.secretKeyRef): {entry}")
                report.count("OTLP header checks")
            for source in c.get("envFrom") or []:
                cm = configmaps.get((source.get("configMapRef") or {}).get("name"))
                if cm is not None and OTLP_HEADER_VARS & set(cm.body.get("data") or {}):
                    report.fail(ctx, f"{obj} reads OTLP headers from {cm}")


def check_tracing(objects: list[Obj], expected: dict[str, dict], report: Report, ctx: str, defaults: bool) -> None:
    """What each Deployment's binary reads from OTEL_*: values it accepts (anything else exits
    64), the settings the values ask for (`expected`, worked out from the values by
    expected_tracing), files from the configured Secret or ConfigMap key, the pod's own
    identity as resource; with the chart's defaults, no export and one new trace in ten."""
    for dep in by_kind(objects, "Deployment"):
        service = service_of(dep)
        spec = pod_spec(dep)
        c = spec["containers"][0]
        env = env_of(c)
        value = lambda name: env.get(name, {}).get("value")
        want = expected.get(service)

        if value("OTEL_SERVICE_NAME") != service:
            report.fail(ctx, f"{dep} OTEL_SERVICE_NAME is {value('OTEL_SERVICE_NAME')!r}, not the service's name {service!r}")
        attributes: dict[str, str] = {}
        for pair in (value("OTEL_RESOURCE_ATTRIBUTES") or "").split(","):
            key, sep, text = pair.partition("=")
            if pair.strip() and (not sep or not key.strip()):
                report.fail(ctx, f"{dep} OTEL_RESOURCE_ATTRIBUTES entry {pair!r} is not key=value")
            elif pair.strip():
                attributes[key.strip()] = text.strip()
        for attribute, field_path in DOWNWARD_ATTRIBUTES.items():
            ref = re.fullmatch(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", attributes.get(attribute, ""))
            source = ((env.get(ref.group(1)) or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") if ref else None
            if source != field_path:
                report.fail(ctx, f"{dep} resource attribute {attribute}={attributes.get(attribute)!r} is not the pod's {field_path} (downward API)")
        if attributes.get("k8s.deployment.name", dep.name) != dep.name:
            report.fail(ctx, f"{dep} says it is k8s.deployment.name={attributes['k8s.deployment.name']}")
        if want is not None:
            for key, wanted in want["resourceAttributes"].items():
                wanted = str(wanted).lower() if isinstance(wanted, bool) else str(wanted)
                if urllib.parse.unquote(attributes.get(key, "")) != wanted or key not in attributes:
                    report.fail(ctx, f"{dep} resource attribute {key} is {attributes.get(key)!r}; the values ask for {wanted!r}")

        sampler, arg = value("OTEL_TRACES_SAMPLER"), value("OTEL_TRACES_SAMPLER_ARG")
        ratio = None
        if sampler not in SAMPLERS:
            report.fail(ctx, f"{dep} OTEL_TRACES_SAMPLER {sampler!r} is not a sampler the binary accepts")
        elif sampler in RATIO_SAMPLERS:
            try:
                ratio = float(arg)
            except (TypeError, ValueError):
                ratio = math.nan
            if not 0 <= ratio <= 1:
                report.fail(ctx, f"{dep} OTEL_TRACES_SAMPLER_ARG {arg!r} is not a ratio between 0 and 1 ({sampler} needs one)")
        if defaults and (sampler, ratio) != DEFAULT_SAMPLING:
            report.fail(ctx, f"{dep} samples with {sampler} {arg} by default; the charts' default is {DEFAULT_SAMPLING[0]} at {DEFAULT_SAMPLING[1]}")
        if want is not None and sampler in SAMPLERS and (sampler != want["sampler"] or (ratio is not None and ratio != float(want["samplerArg"]))):
            report.fail(ctx, f"{dep} samples with {sampler} {arg}; the values ask for {want['sampler']} {want['samplerArg']}")
        propagators = value("OTEL_PROPAGATORS")
        if propagators is not None and not {p.strip() for p in propagators.split(",")} <= PROPAGATORS:
            report.fail(ctx, f"{dep} OTEL_PROPAGATORS {propagators!r} names a propagator the binary does not know")
        for var in BATCH_VARS & env.keys():
            if not (value(var) or "").isdigit() or int(value(var)) < 1:
                report.fail(ctx, f"{dep} {var} {value(var)!r} is not a positive whole number")

        exporter = sorted(name for name in env if name.startswith("OTEL_EXPORTER_OTLP_"))
        endpoint = otlp_setting(env, "ENDPOINT")[1]
        if defaults and exporter:
            report.fail(ctx, f"{dep} exports traces with the chart's defaults ({', '.join(exporter)})")
        if want is not None and (endpoint or "") != want["endpoint"]:
            report.fail(ctx, f"{dep} OTEL_EXPORTER_OTLP_ENDPOINT is {endpoint!r}; the values ask for {want['endpoint']!r}")
        report.count("tracing checks")
        if not endpoint:
            if exporter:
                report.fail(ctx, f"{dep} sets {', '.join(exporter)} without an OTLP endpoint")
            continue
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", endpoint):
            report.fail(ctx, f"{dep} OTLP endpoint {endpoint!r} is not an http:// or https:// URL with a host")
        protocol = otlp_setting(env, "PROTOCOL")[1] or "grpc"
        if protocol not in OTLP_PROTOCOLS:
            report.fail(ctx, f"{dep} OTLP protocol {protocol!r} is not one the binary accepts ({sorted(OTLP_PROTOCOLS)})")
        elif want is not None and protocol != want["protocol"]:
            report.fail(ctx, f"{dep} exports over {protocol}; the values ask for {want['protocol']}")
        compression = otlp_setting(env, "COMPRESSION")[1]
        if compression is not None and compression not in OTLP_COMPRESSIONS:
            report.fail(ctx, f"{dep} OTLP compression {compression!r} is not one the binary accepts")
        timeout = otlp_setting(env, "TIMEOUT")[1]
        if timeout is not None and (not timeout.isdigit() or int(timeout) < 1):
            report.fail(ctx, f"{dep} OTLP timeout {timeout!r} is not a whole number of milliseconds of at least 1")
        headers = next((((env[n].get("valueFrom") or {}).get("secretKeyRef") or {}) for n in OTLP_HEADER_VARS if n in env), None)
        wanted_headers = want["headers"]["existingSecret"] if want is not None else None
        if want is not None and (
            (headers or {}).get("name", "") != (wanted_headers.get("name") or "")
            or (headers is not None and headers.get("key") != wanted_headers.get("key"))
        ):
            report.fail(ctx, f"{dep} reads OTLP headers from {headers}; the values name Secret {wanted_headers}")

        files = {setting: otlp_setting(env, setting) for setting in ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY")}
        if (files["CLIENT_CERTIFICATE"][1] is None) != (files["CLIENT_KEY"][1] is None):
            report.fail(ctx, f"{dep} sets one of OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and _CLIENT_KEY without the other")
        wanted_files: dict[str, tuple[str, str, str] | None] = {"CERTIFICATE": None, "CLIENT_CERTIFICATE": None, "CLIENT_KEY": None}
        if want is not None:
            if want["caSecret"].get("name"):
                wanted_files["CERTIFICATE"] = ("secret", want["caSecret"]["name"], want["caSecret"]["key"])
            elif want["caConfigMap"].get("name"):
                wanted_files["CERTIFICATE"] = ("configMap", want["caConfigMap"]["name"], want["caConfigMap"]["key"])
            if want["clientTls"].get("secretName"):
                wanted_files["CLIENT_CERTIFICATE"] = ("secret", want["clientTls"]["secretName"], "tls.crt")
                wanted_files["CLIENT_KEY"] = ("secret", want["clientTls"]["secretName"], "tls.key")
        for setting, (var, path) in files.items():
            wanted = wanted_files[setting]
            if path is None:
                if wanted is not None:
                    report.fail(ctx, f"{dep} sets no OTEL_EXPORTER_OTLP_{setting}; the values configure {wanted}")
                continue
            if not endpoint.startswith("https://"):
                report.fail(ctx, f"{dep} sets {var} for the non-TLS endpoint {endpoint!r}")
            source = mounted_file(path, c, spec)
            if isinstance(source, str):
                report.fail(ctx, f"{dep} {var}={path} {source}")
            elif want is not None and source != wanted:
                report.fail(ctx, f"{dep} {var}={path} is key {source[2]!r} of {source[0]} {source[1]!r}; the values configure {wanted}")
            report.count("OTLP file checks")


def check_tracing_copies(helm_dir: Path, defaults: dict[str, dict], report: Report) -> None:
    """The service charts share one `tracing` section: the same defaults and the same schema
    (and global.tracing schema), so --set global.tracing.* means one thing in all three."""
    first = None
    for chart in SERVICE_CHARTS:
        schema = json.loads((helm_dir / chart / "values.schema.json").read_text())["properties"]
        copy_ = (
            defaults[chart].get("tracing"),
            schema.get("tracing"),
            schema["global"]["properties"].get("tracing"),
        )
        if first is None:
            first = (chart, copy_)
        else:
            for what, mine, theirs in zip(("values.yaml tracing", "schema tracing", "schema global.tracing"), copy_, first[1]):
                if mine != theirs:
                    report.fail(f"tracing {chart}", f"{what} differs from {first[0]}'s")
        report.count("tracing section copies")


CHECKS = [
    check_config_files,
    check_headless_services,
    check_peer_network_policies,
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
    check_env_references,
    check_otlp_headers,
]


def inspect(
    objects: list[Obj],
    report: Report,
    ctx: str,
    app_versions: dict[str, str],
    default_tags: bool,
    tracing: dict[str, dict] | None = None,
    defaults: bool = False,
    values: dict[str, dict] | None = None,
) -> None:
    """`values`: each service's values in the render (service_values); checks that compare the
    render with them skip a service without."""
    for check in CHECKS:
        check(objects, report, ctx)
    check_images(objects, app_versions, report, ctx, default_tags)
    check_tracing(objects, tracing or {}, report, ctx, defaults)
    check_peer_addresses(objects, report, ctx, values)
    check_connection_settings(objects, values, report, ctx, defaults)


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


def deep_merge(base: dict, over: dict) -> dict:
    """Helm's coalescing of values: maps merge key by key, null removes a key, the rest replaces."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def chart_defaults(helm_dir: Path = HELM) -> dict[str, dict]:
    """Every chart's values.yaml, by chart name."""
    return {name: load_values(helm_dir / name / "values.yaml") for name in SERVICE_CHARTS + [UMBRELLA]}


def service_values(defaults: dict[str, dict], chart: Path, values: dict | None) -> dict[str, dict]:
    """Each service chart's values in a render (its defaults, the umbrella's, the given ones, globals)."""
    if chart.name != UMBRELLA:
        return {chart.name: deep_merge(defaults[chart.name], values or {})}
    top = deep_merge(defaults[UMBRELLA], values or {})
    return {
        name: deep_merge(defaults[name], {**(top.get(name) or {}), "global": top.get("global") or {}})
        for name in SERVICE_CHARTS
    }


def expected_tracing(values: dict) -> dict:
    """The trace settings a service's values ask for, written here independently of the
    templates: a value set in global.tracing (not "", [] or {}) overrides the chart's own,
    as global.trustDomain does; a Secret or ConfigMap named there replaces the chart's."""
    own = copy.deepcopy(values.get("tracing") or {})
    glob = (values.get("global") or {}).get("tracing") or {}
    is_set = lambda v: v is not None and v != "" and v != [] and v != {}
    for key in ("endpoint", "protocol", "sampler", "samplerArg", "propagators", "compression", "timeoutMs", "shutdownTimeoutMs"):
        if is_set(glob.get(key)):
            own[key] = glob[key]
    for group in ("resourceAttributes", "batch"):
        own[group] = {**(own.get(group) or {}), **{k: v for k, v in (glob.get(group) or {}).items() if is_set(v)}}
    set_fields = lambda d: {k: v for k, v in (d or {}).items() if is_set(v)}
    headers = dict((own.get("headers") or {}).get("existingSecret") or {})
    if ((glob.get("headers") or {}).get("existingSecret") or {}).get("name"):
        headers.update(set_fields(glob["headers"]["existingSecret"]))
    own["headers"] = {"existingSecret": headers}
    global_ca = any((glob.get(source) or {}).get("name") for source in ("caSecret", "caConfigMap"))
    for source in ("caSecret", "caConfigMap"):
        own[source] = dict(own.get(source) or {})
        if global_ca:
            own[source].update({"name": "", **set_fields(glob.get(source))})
    own["clientTls"] = dict(own.get("clientTls") or {})
    if (glob.get("clientTls") or {}).get("secretName"):
        own["clientTls"].update(set_fields(glob["clientTls"]))
    return own


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
    defaults = chart_defaults(helm_dir)
    check_tracing_copies(helm_dir, defaults, report)
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
        merged = service_values(defaults, chart, values)
        tracing = {service: expected_tracing(v) for service, v in merged.items()}
        inspect(objects, report, f"check {name}", versions, default_tags, tracing, defaults=values is None, values=merged)
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
