"""Tests of the chart check itself: the schemas refuse bad values, and a
deliberate fault in a copy of the charts is reported, each by the check meant
to catch it. Run: .tools/charts-venv/bin/python -m pytest tests/charts
"""

from __future__ import annotations

import shutil
from pathlib import Path

import helm_python as helm
import pytest

import chartcheck

BAD_VALUES = Path(__file__).resolve().parent / "bad-values"


@pytest.fixture(scope="module", autouse=True)
def dependencies() -> None:
    chartcheck.build_dependencies()


@pytest.mark.parametrize("bad", sorted(BAD_VALUES.glob("*.yaml")), ids=lambda p: p.stem)
def test_schema_rejects_bad_values_at_install(bad: Path) -> None:
    values = chartcheck.load_values(bad)
    with pytest.raises(helm.HelmValuesError) as refused:
        chartcheck.render(chartcheck.HELM / chartcheck.UMBRELLA, values)
    service = next(iter(values))
    assert service in str(refused.value), f"the refusal should name the chart: {refused.value}"
    problems = chartcheck.lint(chartcheck.HELM / chartcheck.UMBRELLA, values, chartcheck.KUBE_VERSIONS[0])
    assert problems, f"lint accepted {bad.name}"


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


@pytest.mark.parametrize("file, old, new, occurrence, expected", FAULTS)
def test_a_deliberate_fault_is_reported(tmp_path: Path, file: str, old: str, new: str, occurrence: int, expected: str) -> None:
    helm_dir = faulty_copy(tmp_path, file, old, new, occurrence)
    report = chartcheck.check_all(helm_dir, quiet=True)
    assert any(expected in failure for failure in report.failures), "\n".join(
        [f"expected a failure containing {expected!r}; got:"] + report.failures
    )
