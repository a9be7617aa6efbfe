"""The Helm chart (helm/intygstjanst): it lints, renders with the default and the production values and
with monitoring on, every rendered object is valid Kubernetes 1.30 (kubernetes-validate, strict), and the
rendered objects hold what operators rely on: a locked-down, probed, resourced Deployment, a migration
hook Job, the dashboard ConfigMap and the Prometheus Operator objects carrying the tested rule file.

Needs helm on PATH (`bash tools/install-ops-tools` installs it); skipped with that reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "intygstjanst"
PRODUCTION = ROOT / "helm" / "values-production.yaml"
RULES = CHART / "alerts" / "intygstjanst-rules.yaml"
DASHBOARD = CHART / "dashboards" / "intygstjanst.json"
KUBE_VERSION = "1.30.0"
RELEASE = "it"
NAMESPACE = "intygstjanst"
MONITORING_API = "monitoring.coreos.com/v1"

HELM = shutil.which("helm")
pytestmark = pytest.mark.skipif(
    HELM is None, reason="helm is not on PATH: run `bash tools/install-ops-tools` to install it"
)

FORCE_MONITORING = (
    "--set",
    "monitoring.serviceMonitor.enabled=true",
    "--set",
    "monitoring.prometheusRule.enabled=true",
)
# Scenario name -> extra `helm template` arguments.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "default": (),
    "production": ("-f", str(PRODUCTION)),
    "monitoring-forced": FORCE_MONITORING,
    "monitoring-detected": ("--api-versions", MONITORING_API),
    "production-detected": ("-f", str(PRODUCTION), "--api-versions", MONITORING_API),
}

Manifest = dict[str, Any]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    done = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def template_args(*extra: str) -> list[str]:
    return ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *extra]


@cache
def render(scenario: str) -> tuple[Manifest, ...]:
    out = helm(*template_args(*SCENARIOS[scenario])).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def only(manifests: tuple[Manifest, ...], kind: str, name_suffix: str = "") -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, found {[m['metadata']['name'] for m in found]}"
    )
    return found[0]


def kinds(manifests: tuple[Manifest, ...]) -> list[str]:
    return sorted(m["kind"] for m in manifests)


def container(workload: Manifest) -> Manifest:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(c: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in c.get("env", [])}


def values() -> Manifest:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text("utf-8")))


# --- lint and render --------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [(), ("-f", str(PRODUCTION))], ids=["default", "production"])
def test_chart_lints_strictly(extra: tuple[str, ...]) -> None:
    done = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *extra)
    assert "0 chart(s) failed" in done.stdout


def test_default_render_has_the_core_objects_and_no_operator_objects() -> None:
    assert kinds(render("default")) == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "Job",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
    ]


def test_production_render_adds_ingress_hpa_and_operator_objects() -> None:
    assert kinds(render("production")) == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "Job",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceMonitor",
    ]


@pytest.mark.parametrize("scenario", ["monitoring-forced", "monitoring-detected", "production-detected"])
def test_operator_objects_render_when_forced_or_detected(scenario: str) -> None:
    found = kinds(render(scenario))
    assert found.count("ServiceMonitor") == 1
    assert found.count("PrometheusRule") == 1


def test_operator_objects_can_be_turned_off_although_detected() -> None:
    out = helm(
        *template_args(
            "--api-versions",
            MONITORING_API,
            "--set",
            "monitoring.serviceMonitor.enabled=false",
            "--set",
            "monitoring.prometheusRule.enabled=false",
        )
    ).stdout
    found = [d["kind"] for d in yaml.safe_load_all(out) if d]
    assert "ServiceMonitor" not in found
    assert "PrometheusRule" not in found


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    """The kubernetes-validate package (bundled JSON schemas of each Kubernetes release; offline)."""
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (a test dependency of the project)",
    )


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_object_is_valid_kubernetes(scenario: str, kubernetes_validate: Any) -> None:
    """Strict schema validation (unknown fields rejected) of every object Kubernetes itself knows."""
    checked = 0
    for manifest in render(scenario):
        if manifest["apiVersion"] == MONITORING_API:
            continue  # CRDs of the Prometheus Operator: checked by the tests below instead
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{manifest['kind']} {manifest['metadata']['name']}: {exc}")
        checked += 1
    assert checked >= 7


def test_schema_validation_would_catch_a_mistake(kubernetes_validate: Any) -> None:
    """The validator really checks: a misspelt field and a wrong type are both rejected."""
    deployment = json.loads(json.dumps(only(render("default"), "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    deployment = json.loads(json.dumps(only(render("default"), "Deployment")))
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (("--set", "database.existingSecret="), "database.existingSecret"),
        (("--set", "monitoring.serviceMonitor.enabled=maybe"), "auto, true or false"),
        (
            ("--set", "portalJwks.existingSecret=a", "--set", "portalJwks.existingConfigMap=b"),
            "not both",
        ),
        (("--set", "config.extra.PROFILE=production"), "not an INTYG_ setting"),
        (("--set", "preStopSleepSeconds=30"), "below terminationGracePeriodSeconds"),
    ],
    ids=[
        "no-database-secret",
        "bad-monitoring-switch",
        "two-jwks-sources",
        "non-intyg-setting",
        "long-prestop",
    ],
)
def test_misconfiguration_fails_rendering_with_a_reason(settings: tuple[str, ...], message: str) -> None:
    done = helm(*template_args(*settings), check=False)
    assert done.returncode != 0
    assert message in done.stderr


# --- the Deployment ---------------------------------------------------------------------------------


def pod_and_container_security(workload: Manifest) -> None:
    pod = workload["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 10001
    assert psc["runAsGroup"] == 10001
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    c = container(workload)
    csc = c["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["runAsNonRoot"] is True
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable place is an emptyDir at /tmp, the working directory.
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1
    assert "emptyDir" in volumes[tmp[0]["name"]]
    assert c["workingDir"] == "/tmp"
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) >= {"cpu", "memory"}
    # The database URL comes from the operator's Secret, never from a value in the chart.
    url = env_of(c)["INTYG_DATABASE_URL"]
    assert "value" not in url
    assert url["valueFrom"]["secretKeyRef"] == {"name": "intygstjanst-database", "key": "url"}


@pytest.mark.parametrize("scenario", ["default", "production"])
def test_deployment_is_locked_down(scenario: str) -> None:
    manifests = render(scenario)
    pod_and_container_security(only(manifests, "Deployment"))
    pod_and_container_security(only(manifests, "Job", "-migrate"))


def test_deployment_serves_on_8080_with_probes_and_graceful_stop() -> None:
    deployment = only(render("default"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert c["command"] == ["intygstjanst", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert pod["terminationGracePeriodSeconds"] == 30
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert 0 < int(sleep[1]) < 30
    assert deployment["spec"]["replicas"] == values()["replicaCount"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_settings_come_from_the_configmap() -> None:
    manifests = render("default")
    deployment = only(manifests, "Deployment")
    configmap = only(manifests, "ConfigMap", "intygstjanst")
    assert container(deployment)["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    assert configmap["data"] == {
        "INTYG_LOG_LEVEL": "INFO",
        "INTYG_TIMEZONE": "Europe/Stockholm",
        "INTYG_DB_POOL_SIZE": "10",
        "INTYG_PORTAL_ISSUER": "intygstjanst-dev-portal",
        "INTYG_PORTAL_AUDIENCE": "intygstjanst",
    }
    # A changed ConfigMap rolls the pods.
    assert "checksum/config" in deployment["spec"]["template"]["metadata"]["annotations"]
    # Without a JWKS nothing is mounted and the service is not pointed at a file.
    assert "INTYG_PORTAL_JWKS_FILE" not in env_of(container(deployment))


def test_production_values() -> None:
    manifests = render("production")
    deployment = only(manifests, "Deployment")
    c = container(deployment)
    assert "replicas" not in deployment["spec"]  # the HPA owns the replica count
    hpa = only(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert only(manifests, "ConfigMap", "intygstjanst")["data"]["INTYG_PROFILE"] == "production"
    assert only(manifests, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    ingress = only(manifests, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": only(manifests, "Service")["metadata"]["name"], "port": {"name": "http"}}
    assert ingress["spec"]["tls"]
    # The portal's JWKS is mounted read-only, and the service is pointed at it.
    mount = next(m for m in c["volumeMounts"] if m["name"] == "portal-jwks")
    assert mount["readOnly"] is True
    assert env_of(c)["INTYG_PORTAL_JWKS_FILE"]["value"] == f"{mount['mountPath']}/jwks.json"
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "portal-jwks")
    assert volume["secret"]["secretName"] == "intygstjanst-portal-jwks"


@pytest.mark.parametrize("suffix", ["intygstjanst", "-migrate"])
def test_the_keys_of_encryption_at_rest_are_mounted_from_their_secret_for_the_service_and_the_migration(
    suffix: str,
) -> None:
    # Issue 5: the service reads its KEKs and lookup key from the keys file; the migration needs them
    # to encrypt rows stored before 0003. Never a value of the chart, never a file the pod writes.
    kind = "Job" if suffix == "-migrate" else "Deployment"
    workload = only(render("production"), kind, suffix)
    c = container(workload)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "encryption-keys")
    assert mount["readOnly"] is True
    assert env_of(c)["INTYG_KEYS_FILE"] == {
        "name": "INTYG_KEYS_FILE",
        "value": f"{mount['mountPath']}/keys.json",
    }
    volume = next(
        v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == "encryption-keys"
    )
    assert volume["secret"] == {
        "secretName": "intygstjanst-keys",
        "items": [{"key": "keys.json", "path": "keys.json"}],
    }
    default = container(only(render("default"), kind, suffix))
    assert "INTYG_KEYS_FILE" not in env_of(default)
    assert all(m["name"] != "encryption-keys" for m in default["volumeMounts"])


def test_jwks_from_a_configmap() -> None:
    out = helm(*template_args("--set", "portalJwks.existingConfigMap=portal-keys")).stdout
    deployment = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "portal-jwks")
    assert volume["configMap"]["name"] == "portal-keys"
    assert (
        env_of(container(deployment))["INTYG_PORTAL_JWKS_FILE"]["value"]
        == "/etc/intygstjanst/portal/jwks.json"
    )


# --- the migration hook Job ---------------------------------------------------------------------------


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook() -> None:
    manifests = render("default")
    job = only(manifests, "Job", "-migrate")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    c = container(job)
    assert c["command"] == ["intygstjanst", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # Same settings as the service, inline: the ConfigMap does not exist yet at pre-install.
    configmap = only(manifests, "ConfigMap", "intygstjanst")
    env = env_of(c)
    assert "envFrom" not in c
    for name, value in configmap["data"].items():
        assert env[name]["value"] == value


# --- Service, PDB, NetworkPolicy ----------------------------------------------------------------------


def test_service_and_pdb_select_the_server_pods() -> None:
    manifests = render("default")
    pod_labels = only(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = only(manifests, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    for selector in (
        service["spec"]["selector"],
        only(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    # ... and not the migration Job's pods.
    job_labels = only(manifests, "Job", "-migrate")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= job_labels.items()


def test_network_policy_admits_only_the_service_port_and_reaches_only_dns_and_postgresql() -> None:
    manifests = render("default")
    policy = only(manifests, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    # It covers the server's and the migration Job's pods.
    for workload in (only(manifests, "Deployment"), only(manifests, "Job", "-migrate")):
        assert (
            policy["podSelector"]["matchLabels"].items()
            <= workload["spec"]["template"]["metadata"]["labels"].items()
        )
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    namespaces = [p["namespaceSelector"]["matchLabels"] for p in rule["from"] if "namespaceSelector" in p]
    assert {"kubernetes.io/metadata.name": "monitoring"} in namespaces  # Prometheus scrapes
    egress_ports = sorted((p["port"], p["protocol"]) for r in policy["egress"] for p in r["ports"])
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (5432, "TCP")]
    assert {"ipBlock": {"cidr": "10.0.0.0/8"}} in policy["egress"][1]["to"]


def test_network_policy_with_no_peers_admits_nothing() -> None:
    out = helm(
        *template_args(
            "--set",
            "networkPolicy.ingress.namespaceSelectors=null",
            "--set",
            "networkPolicy.ingress.prometheusNamespace=",
        )
    ).stdout
    policy = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "NetworkPolicy")
    assert policy["spec"]["ingress"] == []  # an empty `from` would have admitted every source


# --- monitoring objects -------------------------------------------------------------------------------


def test_dashboard_configmap_carries_the_dashboard_for_the_sidecar() -> None:
    configmap = only(render("default"), "ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["intygstjanst.json"]) == json.loads(DASHBOARD.read_text("utf-8"))


@pytest.mark.parametrize("scenario", ["monitoring-forced", "monitoring-detected"])
def test_service_monitor_scrapes_the_service(scenario: str) -> None:
    manifests = render(scenario)
    monitor = only(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == MONITORING_API
    service = only(manifests, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"]
    # The rules select job="intygstjanst": the monitor names the job so whatever the release is called.
    assert {"targetLabel": "job", "replacement": "intygstjanst", "action": "replace"} in endpoint[
        "relabelings"
    ]


@pytest.mark.parametrize("scenario", ["monitoring-forced", "monitoring-detected"])
def test_prometheus_rule_carries_the_tested_rule_file(scenario: str) -> None:
    rule = only(render(scenario), "PrometheusRule")
    assert rule["apiVersion"] == MONITORING_API
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text("utf-8"))["groups"]
    for group in rule["spec"]["groups"]:
        assert group["name"]
        for r in group["rules"]:
            assert r["expr"]
            assert r["labels"]["severity"] in {"critical", "warning", "info"}


def test_operator_object_labels_for_prometheus_selectors() -> None:
    manifests = render("production")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert only(manifests, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
