"""Tests of the chart check itself: the schemas (or the templates) refuse bad
values, and a deliberate fault in a copy of the charts is reported, each by the
check meant to catch it. Run: .tools/charts-venv/bin/python -m pytest tests/charts

Each file in bad-values/ says in its header what refuses it, one line each:
    # refused-by: schema: <text of the schema refusal>
    # refused-by: template: <text of the template's fail>
    # refused-by: check: <text of chartcheck's failure>
The first that applies at install is asserted (schema, else template); with both a
schema line and a template or check line, the values are also rendered by a copy of
the charts without their schemas (as `--skip-schema-validation` would), which the
template or the check must still refuse. A file without such a line is a schema refusal.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import helm_python as helm
import pytest

import chartcheck

BAD_VALUES = Path(__file__).resolve().parent / "bad-values"


@pytest.fixture(scope="module", autouse=True)
def dependencies() -> None:
    chartcheck.build_dependencies()


def refusals(bad: Path) -> dict[str, str]:
    """What the header of a bad-values file says refuses it: {"schema"|"template"|"check": text}."""
    found = dict(re.findall(r"^# refused-by: (schema|template|check):[ ]?(.*)$", bad.read_text(), re.MULTILINE))
    return found or {"schema": ""}


BAD = sorted(BAD_VALUES.glob("*.yaml"))


@pytest.mark.parametrize("bad", BAD, ids=lambda p: p.stem)
def test_bad_values_are_refused_at_install(bad: Path) -> None:
    values = chartcheck.load_values(bad)
    expected = refusals(bad)
    assert {"schema", "template"} & expected.keys(), f"{bad.name}: nothing refuses it at install"
    if "schema" in expected:
        with pytest.raises(helm.HelmValuesError) as refused:
            chartcheck.render(chartcheck.HELM / chartcheck.UMBRELLA, values)
        charts = chartcheck.SERVICE_CHARTS if next(iter(values)) == "global" else [next(iter(values))]
        assert any(chart in str(refused.value) for chart in charts), f"the refusal should name the chart: {refused.value}"
        assert expected["schema"] in str(refused.value), f"expected {expected['schema']!r} in: {refused.value}"
        problems = chartcheck.lint(chartcheck.HELM / chartcheck.UMBRELLA, values, chartcheck.KUBE_VERSIONS[0])
        assert problems, f"lint accepted {bad.name}"
    else:
        with pytest.raises(helm.HelmRenderError) as refused:
            chartcheck.render(chartcheck.HELM / chartcheck.UMBRELLA, values)
        assert expected["template"] in str(refused.value), f"expected {expected['template']!r} in: {refused.value}"


@pytest.fixture(scope="module")
def charts_without_schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    helm_dir = tmp_path_factory.mktemp("no-schemas") / "helm"
    shutil.copytree(chartcheck.HELM, helm_dir, ignore=shutil.ignore_patterns("charts", "Chart.lock", "values.schema.json"))
    chartcheck.build_dependencies(helm_dir)
    return helm_dir


@pytest.mark.parametrize(
    "bad", [b for b in BAD if "schema" in refusals(b) and {"template", "check"} & refusals(b).keys()], ids=lambda p: p.stem
)
def test_without_the_schemas_the_templates_or_the_check_still_refuse(charts_without_schemas: Path, bad: Path) -> None:
    values = chartcheck.load_values(bad)
    expected = refusals(bad)
    umbrella = charts_without_schemas / chartcheck.UMBRELLA
    if "template" in expected:
        with pytest.raises(helm.HelmRenderError) as refused:
            chartcheck.render(umbrella, values)
        assert expected["template"] in str(refused.value), f"expected {expected['template']!r} in: {refused.value}"
        return
    objects = chartcheck.render(umbrella, values)
    report = chartcheck.Report()
    merged = chartcheck.service_values(chartcheck.chart_defaults(charts_without_schemas), umbrella, values)
    tracing = {s: chartcheck.expected_tracing(v) for s, v in merged.items()}
    chartcheck.inspect(objects, report, bad.name, chartcheck.app_versions(charts_without_schemas), True, tracing, values=merged)
    assert any(expected["check"] in failure for failure in report.failures), "\n".join(
        [f"expected a failure containing {expected['check']!r}; got:"] + report.failures
    )


def test_schema_accepts_every_shipped_value_set() -> None:
    for values_file in sorted(chartcheck.VALUE_SETS.glob("*.yaml")):
        chartcheck.render(chartcheck.HELM / chartcheck.UMBRELLA, chartcheck.load_values(values_file))


def test_grace_period_shorter_than_the_drain_fails_the_render() -> None:
    values = {"user-service": {"shutdown": {"drainMs": 20000, "preStopSleepSeconds": 5, "terminationGracePeriodSeconds": 20}}}
    with pytest.raises(helm.HelmRenderError, match="killed mid-drain"):
        chartcheck.render(chartcheck.HELM / chartcheck.UMBRELLA, values)


def test_a_database_is_required_unless_the_throwaway_mode_is_asked_for() -> None:
    values = {"order-service": {"database": {"existingSecret": {"name": "", "key": "url"}}}}
    with pytest.raises(helm.HelmRenderError, match="PostgreSQL database is required"):
        chartcheck.render(chartcheck.HELM / chartcheck.UMBRELLA, values)
    values = {"order-service": {"replicas": 2, "database": {"existingSecret": {"name": "", "key": "url"}, "embeddedSqlite": True}}}
    with pytest.raises(helm.HelmRenderError, match="one pod's emptyDir"):
        chartcheck.render(chartcheck.HELM / chartcheck.UMBRELLA, values)


def deployments(values: dict) -> dict[str, dict]:
    """name -> env of each Deployment's container in the umbrella's render."""
    objects = chartcheck.render(chartcheck.HELM / chartcheck.UMBRELLA, values)
    return {d.name: chartcheck.env_of(chartcheck.pod_spec(d)["containers"][0]) for d in chartcheck.by_kind(objects, "Deployment")}


def test_one_global_endpoint_points_every_service_at_one_collector() -> None:
    collector = "http://otel-collector.observability:4317"
    envs = deployments({"global": {"tracing": {"endpoint": collector}}})
    assert sorted(envs) == sorted(chartcheck.SERVICE_CHARTS)
    for name, env in envs.items():
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == collector, name
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "grpc", name
        assert (env["OTEL_TRACES_SAMPLER"]["value"], env["OTEL_TRACES_SAMPLER_ARG"]["value"]) == ("parentbased_traceidratio", "0.1")
    # As with global.trustDomain, a value set in global.tracing wins over a section's own;
    # a section's own value applies where global.tracing sets none.
    envs = deployments({
        "global": {"tracing": {"endpoint": collector}},
        "user-service": {"tracing": {"endpoint": "http://elsewhere:4317", "samplerArg": "0.5"}},
    })
    assert envs["user-service"]["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == collector
    assert envs["user-service"]["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.5"
    assert envs["order-service"]["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.1"


def test_without_an_endpoint_nothing_is_exported() -> None:
    for name, env in deployments({}).items():
        assert not [var for var in env if var.startswith("OTEL_EXPORTER_")], name
        assert env["OTEL_SERVICE_NAME"]["value"] == name


def notes(chart: str, values: dict | None) -> str:
    with helm.Chart.load(str(chartcheck.HELM / chart)) as loaded:
        manifests = loaded.render(values=values, name=chartcheck.RELEASE, namespace=chartcheck.NAMESPACE, is_install=True)
    return next(text for source, text in manifests.items() if source == f"{chart}/templates/NOTES.txt")


def test_notes_say_whether_traces_are_exported_and_where() -> None:
    for chart in chartcheck.SERVICE_CHARTS:
        assert "Traces: not exported" in notes(chart, None), chart
        exporting = notes(chart, {"tracing": {"endpoint": "http://otel-collector.observability:4317"}})
        assert "Traces: exported to http://otel-collector.observability:4317 over OTLP grpc" in exporting, chart
    suite = notes(chartcheck.UMBRELLA, chartcheck.load_values(chartcheck.VALUE_SETS / "tracing.yaml"))
    for chart in chartcheck.SERVICE_CHARTS:
        assert f"{chart} traces: exported to https://otlp.tracing.example.net:4318 over OTLP http/protobuf" in suite


def test_callers_dial_the_headless_services_unless_told_otherwise() -> None:
    def addresses(values: dict) -> dict[str, str]:
        objects = chartcheck.render(chartcheck.HELM / chartcheck.UMBRELLA, values)
        return {f"{peer.caller} -> {peer.service}": peer.address for peer in chartcheck.dialled_peers(objects)}

    assert addresses({}) == {
        "order-service -> user-service": "user-service-headless.shop.svc:50051",
        "edge-gateway -> user-service": "user-service-headless.shop.svc:50051",
        "edge-gateway -> order-service": "order-service-headless.shop.svc:50052",
    }
    # Back to the ClusterIP Services, one caller at a time; an explicit address wins either way.
    assert addresses({"order-service": {"discovery": {"headless": False}}}) == {
        "order-service -> user-service": "user-service.shop.svc:50051",
        "edge-gateway -> user-service": "user-service-headless.shop.svc:50051",
        "edge-gateway -> order-service": "order-service-headless.shop.svc:50052",
    }
    assert addresses({"edge-gateway": {"discovery": {"headless": False}}, "order-service": {"userService": {"address": "users.example:7000"}}}) == {
        "order-service -> user-service": "users.example:7000",
        "edge-gateway -> user-service": "user-service.shop.svc:50051",
        "edge-gateway -> order-service": "order-service.shop.svc:50052",
    }
    envs = deployments({"order-service": {"discovery": {"resolveIntervalMs": 5000}}, "user-service": {"server": {"maxConnectionAgeMs": 0}}})
    assert envs["order-service"]["RESOLVE_INTERVAL_MS"]["value"] == "5000"
    assert envs["edge-gateway"]["RESOLVE_INTERVAL_MS"]["value"] == "30000"
    assert "RESOLVE_INTERVAL_MS" not in envs["user-service"]
    assert envs["user-service"]["MAX_CONNECTION_AGE_MS"]["value"] == "0"
    # Whole numbers stay whole numbers (Helm reads them as floats: 1e+06 otherwise).
    envs = deployments({"edge-gateway": {"server": {"maxConnectionAgeMs": 1000000, "maxConnectionAgeGraceMs": 2000000}}})
    assert (envs["edge-gateway"]["MAX_CONNECTION_AGE_MS"]["value"], envs["edge-gateway"]["MAX_CONNECTION_AGE_GRACE_MS"]["value"]) == ("1000000", "2000000")


def test_notes_name_the_headless_service_and_where_calls_go() -> None:
    user = notes("user-service", None)
    assert "Callers in the cluster dial the headless Service user-service-headless.shop.svc:50051" in user
    assert "Connections are told to go away after 5 min (server.maxConnectionAgeMs" in user
    assert "Connections never age" in notes("user-service", {"server": {"maxConnectionAgeMs": 0}})
    assert "It calls user-service at user-service-headless.shop.svc:50051: each call to one of its ready pods (headless Service), re-resolved every 30 s." in notes("order-service", None)
    assert "It calls user-service at user-service.shop.svc:50051: one pod per connection (ClusterIP Service)" in notes("order-service", {"discovery": {"headless": False}})
    gateway = notes("edge-gateway", {"discovery": {"resolveIntervalMs": 1500}})
    assert "order-service at order-service-headless.shop.svc:50052: each call to one of its ready pods (headless Service), re-resolved every 1500 ms" in gateway
    suite = notes(chartcheck.UMBRELLA, chartcheck.load_values(chartcheck.VALUE_SETS / "all-features.yaml"))
    assert "each service is called through its headless Service (<service>-headless)" in suite
    assert "edge-gateway dials the ClusterIP Services (discovery.headless=false)" in suite


def test_an_istio_canary_bypassed_by_headless_callers_is_reported_without_the_suite_check(tmp_path: Path) -> None:
    """The suite chart refuses the combination; a service chart alone cannot see it, and the check must still."""
    helm_dir = faulty_copy(tmp_path, "suite/templates/checks.yaml", "{{- fail (printf", "{{- $_ := (printf")
    chartcheck.build_dependencies(helm_dir)
    umbrella = helm_dir / chartcheck.UMBRELLA
    values = chartcheck.load_values(BAD_VALUES / "istio-canary-with-headless-callers.yaml")
    objects = chartcheck.render(umbrella, values)
    report = chartcheck.Report()
    merged = chartcheck.service_values(chartcheck.chart_defaults(helm_dir), umbrella, values)
    chartcheck.inspect(objects, report, "istio", chartcheck.app_versions(helm_dir), True, values=merged)
    assert any("dials order-service-headless, bypassing the Istio canary split of order-service" in f for f in report.failures), "\n".join(report.failures)


def test_the_unmodified_charts_pass() -> None:
    report = chartcheck.check_all(quiet=True)
    assert report.failures == []
    assert report.counts["object validations"] > 0 and report.counts["probe checks"] > 0


def faulty_copy(tmp_path: Path, file: str, old: str, new: str, occurrence: int = 1) -> Path:
    """A copy of helm/ with the `occurrence`-th `old` in `file` replaced by `new`."""
    helm_dir = tmp_path / "helm"
    shutil.copytree(chartcheck.HELM, helm_dir, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    target = helm_dir / file
    parts = target.read_text().split(old)
    assert len(parts) > occurrence, f"{old!r} not in {file} {occurrence} time(s): the fault no longer applies"
    text = old.join(parts[:occurrence]) + new + old.join(parts[occurrence:])
    target.write_text(text)
    return helm_dir


DEPLOYMENT = "suite-common/templates/_deployment.tpl"
FAULTS = [
    pytest.param(
        DEPLOYMENT,
        'port: {{ $.Values.ports.admin }}\n              service: ""',
        'port: 9999\n              service: ""',
        1,
        "readinessProbe probes port 9999, not the admin port",
        id="readiness-probe-on-a-port-that-does-not-exist",
    ),
    pytest.param(
        DEPLOYMENT,
        "service: liveness\n            periodSeconds: {{ $.Values.probes.liveness.periodSeconds }}",
        'service: ""\n            periodSeconds: {{ $.Values.probes.liveness.periodSeconds }}',
        1,
        "livenessProbe asks for health '', expected 'liveness'",
        id="liveness-follows-the-database",
    ),
    pytest.param(
        DEPLOYMENT,
        "grpc:\n              port: {{ $.Values.ports.admin }}\n              service: liveness\n            periodSeconds: {{ $.Values.probes.startup",
        "tcpSocket:\n              port: {{ $.Values.ports.admin }}\n            periodSeconds: {{ $.Values.probes.startup",
        1,
        "startupProbe is not a native gRPC probe",
        id="startup-probe-is-tcp",
    ),
    pytest.param(
        "suite-common/templates/_helpers.tpl",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: false",
        1,
        "has a writable root filesystem",
        id="writable-root-filesystem",
    ),
    pytest.param(
        "suite-common/templates/_helpers.tpl",
        "  drop:\n    - ALL",
        "  drop:\n    - NET_RAW",
        1,
        "does not drop all capabilities",
        id="capabilities-kept",
    ),
    pytest.param(
        "suite-common/templates/_hooks.tpl",
        "helm.sh/hook: pre-install,pre-upgrade",
        "helm.sh/hook: post-install,post-upgrade",
        2,
        "is not a pre-install and pre-upgrade hook",
        id="migration-after-the-deployment",
    ),
    pytest.param(
        "suite-common/templates/_helpers.tpl",
        '  value: {{ ternary "false" "true" (eq (include "suite.migrationJobEnabled" .) "true") | quote }}',
        '  value: "true"',
        1,
        "still migrates on start",
        id="pods-migrate-beside-the-job",
    ),
    pytest.param(
        "suite-common/templates/_networkpolicy.tpl",
        "{{- range $callers }}",
        "{{- range (append $callers \"rogue-service\") }}",
        1,
        "admits ['edge-gateway', 'order-service', 'rogue-service'] to the gRPC port",
        id="network-policy-admits-an-extra-caller",
    ),
    pytest.param(
        "suite-common/templates/_networkpolicy.tpl",
        "{{- else if or $callers .Values.networkPolicy.extraGrpcFrom }}\n    - ports:\n        - port: grpc\n          protocol: TCP\n      from:",
        "{{- else if or $callers .Values.networkPolicy.extraGrpcFrom }}\n    - ports:\n        - port: grpc\n          protocol: TCP\n      fromx:",
        1,
        "opens user-service's gRPC port to every source",
        id="network-policy-opens-a-service",
    ),
    pytest.param(
        "user-service/templates/configmap.yaml",
        "\ndata:\n",
        "\ndata:\n  database: {{ .Values.database.url | quote }}\n",
        1,
        "holds a URL with a password",
        id="database-url-in-a-configmap",
    ),
    pytest.param(
        "suite-common/templates/_helpers.tpl",
        "app.kubernetes.io/part-of: suite\n",
        "",
        1,
        "lacks labels ['app.kubernetes.io/part-of']",
        id="label-missing",
    ),
    pytest.param(
        "suite-common/templates/_helpers.tpl",
        "{{- add $minimum 3 -}}",
        "{{- 10 -}}",
        1,
        "terminationGracePeriodSeconds 10 < preStop 5s + drain 20000ms + 1s",
        id="grace-period-shorter-than-the-drain",
    ),
    pytest.param(
        "order-service/files/alerts.rules.yaml",
        "max by (namespace, dependency) (client_circuit_state{",
        "max by (namespace, dependency) (client_breaker_open{",
        1,
        "uses metrics the binaries do not serve: ['client_breaker_open']",
        id="alert-on-a-metric-that-does-not-exist",
    ),
    pytest.param(
        "user-service/files/alerts.rules.yaml",
        "> 0.05",
        "> 0.5",
        1,
        "user-service/files/alerts.rules.yaml is not a byte-for-byte copy of alerts/user-service.rules.yaml",
        id="chart-alert-rules-drift-from-the-canonical-file",
    ),
    pytest.param(
        DEPLOYMENT,
        "            successThreshold: 1\n",
        "            sucessThreshold: 1\n",
        1,
        "is not a valid Kubernetes 1.30.0 object",
        id="misspelt-field-fails-strict-validation",
    ),
    pytest.param(
        DEPLOYMENT,
        "            - name: tls\n              mountPath: /etc/suite/tls\n",
        "            - name: tls\n              mountPath: /etc/suite/tls\n              subPath: tls\n",
        1,
        "mounts TLS_CERT with subPath",
        id="certificates-mounted-with-subpath",
    ),
    pytest.param(
        "suite-common/templates/_certificate.tpl",
        "    - {{ include \"suite.spiffeId\" (list . $name) }}",
        "    - spiffe://{{ include \"suite.trustDomain\" . }}/ns/default/sa/{{ $name }}",
        1,
        "URI SANs",
        id="certificate-names-another-namespace",
    ),
    pytest.param(
        "suite-common/templates/_canary.tpl",
        "weight: {{ sub 100 $weight }}",
        "weight: 100",
        1,
        "do not add up to 100",
        id="canary-weights",
    ),
    pytest.param(
        "order-service/values.yaml",
        "  port: 50051\n",
        "  port: 50052\n",
        1,
        "dials user-service on port 50052, but its Service's gRPC port is 50051",
        id="order-service-dials-the-wrong-port",
    ),
    pytest.param(
        "suite-common/templates/_hooks.tpl",
        "int .Values.ports.admin) -}}\napiVersion: v1\nkind: Pod",
        "int .Values.ports.grpc) -}}\napiVersion: v1\nkind: Pod",
        1,
        "does not run `healthcheck --addr user-service.shop.svc:9101`",
        id="helm-test-asks-the-grpc-port",
    ),
]


SERVICE = "suite-common/templates/_service.tpl"
CONNECTIONS = "suite-common/templates/_connections.tpl"
HEADLESS_PORT = "      port: {{ .Values.ports.grpc }}\n      targetPort: grpc"
FAULTS += [
    pytest.param(
        "user-service/templates/headless-service.yaml",
        '{{ include "suite.headlessService" . }}',
        "",
        1,
        "has no headless Service user-service-headless for callers to resolve to its pods",
        id="headless-service-missing",
    ),
    pytest.param(
        SERVICE,
        "  clusterIP: None\n",
        '  clusterIP: ""\n',
        1,
        "user-service-headless (user-service/templates/headless-service.yaml) is not headless (type ClusterIP, clusterIP ''",
        id="headless-service-gets-a-cluster-ip",
    ),
    pytest.param(
        SERVICE,
        "  type: {{ .Values.service.type }}\n",
        "  type: {{ .Values.service.type }}\n  clusterIP: None\n",
        1,
        "is headless; it must keep its cluster IP",
        id="clusterip-service-made-headless",
    ),
    pytest.param(
        SERVICE,
        "publishNotReadyAddresses: false",
        "publishNotReadyAddresses: true",
        1,
        "publishes pods that are not ready (publishNotReadyAddresses)",
        id="headless-service-publishes-unready-pods",
    ),
    pytest.param(
        SERVICE,
        '    {{- include "suite.selectorLabels" . | nindent 4 }}\n  ports:',
        '    {{- include "suite.selectorLabels" . | nindent 4 }}\n    suite.io/track: stable\n  ports:',
        2,
        "selects the pods of Deployments ['user-service']; expected exactly ['user-service', 'user-service-canary']",
        id="headless-service-leaves-out-the-canary",
    ),
    pytest.param(
        SERVICE,
        HEADLESS_PORT,
        "      port: 443\n      targetPort: grpc",
        2,
        "port 443 is not the pods' gRPC port [50051]: a headless Service translates no port",
        id="headless-service-port-is-not-the-pods-port",
    ),
    pytest.param(
        SERVICE,
        HEADLESS_PORT + "\n      protocol: TCP\n      appProtocol: {{ include \"suite.grpcAppProtocol\" . }}\n{{- end -}}",
        HEADLESS_PORT + "\n      protocol: TCP\n      appProtocol: grpc\n{{- end -}}",
        1,
        "gRPC port appProtocol 'grpc' is not Service/user-service",
        id="headless-service-declares-grpc-under-istio",
    ),
    pytest.param(
        CONNECTIONS,
        '{{- $host = include "suite.headlessName" $service -}}',
        "{{- $host = $service -}}",
        1,
        "dials user-service at 'user-service.shop.svc:50051', not its headless Service's DNS name in shop (user-service-headless)",
        id="callers-dial-the-clusterip-service-by-default",
    ),
    pytest.param(
        CONNECTIONS,
        '{{- if include "suite.discovery.headless" $ctx.Values -}}',
        "{{- if true -}}",
        1,
        "dials user-service at 'user-service-headless.shop.svc:50051', not its ClusterIP Service's DNS name in shop (user-service; order-service's discovery.headless is false)",
        id="discovery-headless-false-ignored",
    ),
    pytest.param(
        CONNECTIONS,
        '{{- if include "suite.discovery.headless" $ctx.Values -}}',
        "{{- if true -}}",
        1,
        "dials user-service-headless, bypassing the Istio canary split of user-service",
        id="callers-bypass-an-istio-canary",
    ),
    pytest.param(
        "suite-common/templates/_networkpolicy.tpl",
        "              app.kubernetes.io/name: {{ . }}\n",
        "              app.kubernetes.io/name: {{ . }}\n              app.kubernetes.io/component: client\n",
        1,
        "'s pods to port grpc (50051) of user-service, which order-service dials at user-service-headless.shop.svc:50051",
        id="network-policy-selects-no-caller-pod",
    ),
    pytest.param(
        "user-service/values.yaml",
        "maxConnectionAgeMs: 300000",
        "maxConnectionAgeMs: 3000000",
        1,
        "MAX_CONNECTION_AGE_MS is 3000000 by default; the binary's default is 300000",
        id="default-connection-age-drifts-from-the-binary",
    ),
    pytest.param(
        CONNECTIONS,
        "  value: {{ .Values.server.maxConnectionAgeGraceMs | int | toString | quote }}",
        '  value: "10000"',
        1,
        "MAX_CONNECTION_AGE_GRACE_MS 10000 < GRPC_REQUEST_TIMEOUT_MS 30000: calls still running when their connection ages out would be cut short",
        id="connection-age-grace-shorter-than-a-call",
    ),
    pytest.param(
        CONNECTIONS,
        '{{- if hasKey .Values "discovery" }}',
        "{{- if false }}",
        1,
        "sets no RESOLVE_INTERVAL_MS",
        id="caller-without-a-resolve-interval",
    ),
    pytest.param(
        CONNECTIONS,
        "  value: {{ .Values.discovery.resolveIntervalMs | int | toString | quote }}",
        '  value: "30000"',
        1,
        "RESOLVE_INTERVAL_MS is 30000; the values ask for discovery.resolveIntervalMs 10000",
        id="resolve-interval-not-from-the-values",
    ),
]


TRACING = "suite-common/templates/_tracing.tpl"
NODE_NAME = "- name: NODE_NAME\n  valueFrom:\n    fieldRef:\n      fieldPath: spec.nodeName\n"
RESOURCE = '- name: OTEL_RESOURCE_ATTRIBUTES\n  value: {{ join "," $attributes | quote }}\n'
FAULTS += [
    pytest.param(
        "user-service/values.yaml",
        'samplerArg: "0.1"',
        'samplerArg: "1"',
        1,
        "samples with parentbased_traceidratio 1 by default; the charts' default is parentbased_traceidratio at 0.1",
        id="default-sampling-keeps-every-trace",
    ),
    pytest.param(
        TRACING,
        "{{- if $t.endpoint }}\n- name: TELEMETRY_SHUTDOWN_TIMEOUT_MS",
        "{{- if true }}\n- name: TELEMETRY_SHUTDOWN_TIMEOUT_MS",
        1,
        "exports traces with the chart's defaults (OTEL_EXPORTER_OTLP_ENDPOINT",
        id="exporter-variables-without-an-endpoint",
    ),
    pytest.param(
        TRACING,
        "- name: OTEL_EXPORTER_OTLP_HEADERS\n  valueFrom:\n    secretKeyRef:\n      name: {{ .name }}\n      key: {{ .key }}",
        '- name: OTEL_EXPORTER_OTLP_HEADERS\n  value: {{ printf "x-api-key=%s" .name | quote }}',
        1,
        "sets OTEL_EXPORTER_OTLP_HEADERS other than from a Secret",
        id="otlp-headers-as-a-literal",
    ),
    pytest.param(
        TRACING,
        "    secretKeyRef:\n      name: {{ .name }}",
        "    configMapKeyRef:\n      name: {{ .name }}",
        1,
        "sets OTEL_EXPORTER_OTLP_HEADERS other than from a Secret",
        id="otlp-headers-from-a-configmap-key",
    ),
    pytest.param(
        "user-service/templates/configmap.yaml",
        "\ndata:\n",
        '\ndata:\n  otlp.env: "OTEL_EXPORTER_OTLP_HEADERS=x-api-key%3Dabc"\n',
        1,
        "holds OTLP headers; they belong in a Secret",
        id="otlp-headers-in-a-configmap",
    ),
    pytest.param(
        TRACING,
        "  value: /etc/suite/otel-ca/ca.crt",
        "  value: /etc/suite/otel/ca.crt",
        1,
        "OTEL_EXPORTER_OTLP_CERTIFICATE=/etc/suite/otel/ca.crt is not inside a volumeMount of the container",
        id="collector-ca-outside-its-mount",
    ),
    pytest.param(
        TRACING,
        "      - key: {{ $t.caConfigMap.key }}",
        "      - key: ca.crt",
        1,
        "is key 'ca.crt' of configMap 'tracing-ca-bundle'; the values configure ('configMap', 'tracing-ca-bundle', 'ca-bundle.pem')",
        id="collector-ca-from-the-wrong-key",
    ),
    pytest.param(
        TRACING,
        "    secretName: {{ $t.caSecret.name }}",
        '    secretName: {{ include "suite.tlsSecretName" . }}',
        1,
        "is key 'ca.crt' of secret 'user-service-tls'; the values configure ('secret', 'otel-collector-ca', 'ca.crt')",
        id="collector-ca-from-the-identity-secret",
    ),
    pytest.param(
        TRACING,
        "  value: /etc/suite/otel-client-tls/tls.key",
        "  value: /etc/suite/otel-client-tls/tls.crt",
        1,
        "OTEL_EXPORTER_OTLP_CLIENT_KEY=/etc/suite/otel-client-tls/tls.crt is key 'tls.crt'",
        id="client-key-is-the-certificate",
    ),
    pytest.param(
        TRACING,
        "- name: OTEL_EXPORTER_OTLP_PROTOCOL\n  value: {{ $t.protocol | quote }}",
        '- name: OTEL_EXPORTER_OTLP_PROTOCOL\n  value: "http/json"',
        1,
        "OTLP protocol 'http/json' is not one the binary accepts",
        id="otlp-protocol-the-binary-refuses",
    ),
    pytest.param(
        TRACING,
        "- name: OTEL_TRACES_SAMPLER\n  value: {{ $t.sampler | quote }}",
        '- name: OTEL_TRACES_SAMPLER\n  value: "parentbased_ratio"',
        1,
        "OTEL_TRACES_SAMPLER 'parentbased_ratio' is not a sampler the binary accepts",
        id="sampler-the-binary-refuses",
    ),
    pytest.param(
        TRACING,
        "      fieldPath: metadata.name\n",
        "      fieldPath: metadata.uid\n",
        1,
        "resource attribute k8s.pod.name='$(POD_NAME)' is not the pod's metadata.name (downward API)",
        id="pod-name-from-the-wrong-field",
    ),
    pytest.param(
        TRACING,
        '{{- range $key := list "endpoint" "protocol"',
        '{{- range $key := list "protocol"',
        1,
        "OTEL_EXPORTER_OTLP_ENDPOINT is None; the values ask for 'https://otlp.tracing.example.net:4318'",
        id="global-tracing-endpoint-ignored",
    ),
    pytest.param(
        TRACING,
        "- name: OTEL_SERVICE_NAME\n  value: {{ $name | quote }}",
        "- name: OTEL_SERVICE_NAME\n  value: {{ $.Release.Name | quote }}",
        1,
        "OTEL_SERVICE_NAME is 'suite', not the service's name",
        id="service-name-is-the-release",
    ),
    pytest.param(
        TRACING,
        "  value: {{ $t.shutdownTimeoutMs | int | toString | quote }}",
        '  value: "60000"',
        1,
        "+ span flush 60000ms + 1s: pods would be killed mid-drain",
        id="span-flush-longer-than-the-grace-period",
    ),
    pytest.param(
        "edge-gateway/values.schema.json",
        '"http/protobuf"',
        '"http/json"',
        2,
        "schema tracing differs from user-service's",
        id="tracing-schema-drifts-between-charts",
    ),
]


def test_resource_attributes_after_a_variable_they_reference_are_reported(tmp_path: Path) -> None:
    """The downward-API variable moved after OTEL_RESOURCE_ATTRIBUTES: Kubernetes would leave $(NODE_NAME) as it is."""
    helm_dir = faulty_copy(tmp_path, TRACING, NODE_NAME + "- name: OTEL_SERVICE_NAME", "- name: OTEL_SERVICE_NAME")
    target = helm_dir / TRACING
    target.write_text(target.read_text().replace(RESOURCE, RESOURCE + NODE_NAME, 1))
    report = chartcheck.check_all(helm_dir, quiet=True)
    failures = [f for f in report.failures if "references $(NODE_NAME), which is not defined before it" in f]
    assert failures and not any("defines NODE_NAME twice" in f for f in report.failures), "\n".join(report.failures)


@pytest.mark.parametrize("file, old, new, occurrence, expected", FAULTS)
def test_a_deliberate_fault_is_reported(tmp_path: Path, file: str, old: str, new: str, occurrence: int, expected: str) -> None:
    helm_dir = faulty_copy(tmp_path, file, old, new, occurrence)
    report = chartcheck.check_all(helm_dir, quiet=True)
    assert any(expected in failure for failure in report.failures), "\n".join(
        [f"expected a failure containing {expected!r}; got:"] + report.failures
    )
