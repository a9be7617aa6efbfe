"""The Helm chart (helm/intygstjanst): it lints, renders with the default and the production values, in both
caller modes and with monitoring on, every rendered object is valid Kubernetes 1.30 (kubernetes-validate,
strict), and the rendered objects hold what operators rely on: a locked-down, probed, resourced Deployment in
the production profile with every secret file mounted read-only from a Secret (README "Security"), a migration
hook Job, the dashboard ConfigMap and the Prometheus Operator objects carrying the tested rule file. What the
service would refuse to start without, the chart refuses to render without.

Needs helm on PATH (`bash tools/install-ops-tools` installs it); skipped with that reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
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
# The values the chart cannot default: the ingress controller pods' network (no CIDR is safe for every
# cluster), the citizen portal's keys and the business rules (the production profile refuses to start
# without either).
PROXIES = ("--set", "callers.ingress.trustedProxies={10.244.0.0/16}")
BUSINESS_RULES = ("--set", "businessRules.existingConfigMap=intygstjanst-business-rules")
JWKS = ("--set", "portalJwks.existingSecret=intygstjanst-portal-jwks", *BUSINESS_RULES)
SITE = (*PROXIES, *JWKS)
# The service terminates TLS itself, behind an ssl-passthrough Ingress (its metrics port stays plain HTTP).
DIRECT = (
    *JWKS,
    "--set",
    "callers.mode=direct",
    "--set",
    "callers.direct.tlsSecret=intygstjanst-server-tls",
    "--set",
    "ingress.enabled=true",
    *FORCE_MONITORING,
)
# An Ingress path under a prefix, as ingress-nginx takes one (README.md, "Behind an ingress").
PREFIXED_PATH = (
    "--set",
    "ingress.hosts[0].host=intyg.example.se",
    "--set",
    "ingress.hosts[0].paths[0].path=/intygstjanst(/|$)(.*)",
    "--set",
    "ingress.hosts[0].paths[0].pathType=ImplementationSpecific",
)
# Scenario name -> extra `helm template` arguments.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "default": SITE,
    "production": ("-f", str(PRODUCTION)),
    "monitoring-forced": (*SITE, *FORCE_MONITORING),
    "monitoring-detected": (*SITE, "--api-versions", MONITORING_API),
    "production-detected": ("-f", str(PRODUCTION), "--api-versions", MONITORING_API),
    "direct": DIRECT,
}
# Secret-backed files of the server: env -> (volume, Secret of the default values, key, mount directory).
SECRET_FILES = {
    "INTYG_TLS_CLIENT_CA_FILE": (
        "client-ca",
        "intygstjanst-client-ca",
        "ca.crt",
        "/etc/intygstjanst/client-ca",
    ),
    "INTYG_PERMISSIONS_FILE": (
        "permissions",
        "intygstjanst-permissions",
        "permissions.json",
        "/etc/intygstjanst/permissions",
    ),
    "INTYG_KEYS_FILE": ("data-keys", "intygstjanst-data-keys", "keyring.json", "/etc/intygstjanst/keys"),
    "INTYG_AUDIT_SIGNING_KEY_FILE": (
        "audit-signing-key",
        "intygstjanst-audit-signing-key",
        "signing-key.pem",
        "/etc/intygstjanst/audit",
    ),
}
SERVER_TLS_FILES = {
    "INTYG_TLS_CERT_FILE": ("server-tls", "intygstjanst-server-tls", "tls.crt", "/etc/intygstjanst/tls"),
    "INTYG_TLS_KEY_FILE": ("server-tls", "intygstjanst-server-tls", "tls.key", "/etc/intygstjanst/tls"),
}
# Names that must never be ConfigMap data: a secret, or the path of a file from a Secret.
SECRET_SETTINGS = {"INTYG_DATABASE_URL", "INTYG_PORTAL_JWKS_FILE", *SECRET_FILES, *SERVER_TLS_FILES}

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


def rendered(*extra: str) -> tuple[Manifest, ...]:
    return tuple(d for d in yaml.safe_load_all(helm(*template_args(*extra)).stdout) if d)


def volumes_of(workload: Manifest) -> dict[str, Manifest]:
    return {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}


def mounts_of(c: Manifest) -> dict[str, Manifest]:
    return {m["name"]: m for m in c["volumeMounts"]}


def assert_mounted_from_secret(
    workload: Manifest, env: str, files: dict[str, tuple[str, str, str, str]]
) -> None:
    """`env` points at a file of its own Secret, mounted read-only, mode 0400 (read by the fsGroup)."""
    volume_name, secret, key, directory = files[env]
    c = container(workload)
    assert env_of(c)[env] == {"name": env, "value": f"{directory}/{key}"}
    assert mounts_of(c)[volume_name] == {"name": volume_name, "mountPath": directory, "readOnly": True}
    volume = volumes_of(workload)[volume_name]["secret"]
    assert volume["secretName"] == secret
    assert volume["defaultMode"] == 0o400
    assert {"key": key, "path": key} in volume["items"]
    # Files owned by root, mode 0400: the service (uid 10001) reads them through kubelet's group read
    # for the pod's fsGroup, which is the service's group.
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == c["securityContext"]["runAsGroup"] == 10001


# --- lint and render --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra", [SITE, ("-f", str(PRODUCTION)), DIRECT], ids=["default", "production", "direct"]
)
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
            *SITE,
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


MISCONFIGURATIONS = {
    # name: (settings on top of SITE, the reason the render fails with)
    "no-database-secret": (("--set", "database.existingSecret="), "database.existingSecret"),
    "bad-monitoring-switch": (("--set", "monitoring.serviceMonitor.enabled=maybe"), "auto, true or false"),
    "two-jwks-sources": (("--set", "portalJwks.existingConfigMap=b"), "not both"),
    "non-intyg-setting": (("--set", "config.extra.PROFILE=production"), "not an INTYG_ setting"),
    "long-prestop": (("--set", "preStopSleepSeconds=30"), "below terminationGracePeriodSeconds"),
    # what the service refuses to start without (README "Security")
    "unknown-profile": (
        ("--set", "config.profile=staging"),
        "config.profile must be production or development",
    ),
    "production-without-portal-keys": (
        ("--set", "portalJwks.existingSecret="),
        "the production profile refuses to start without the citizen portal's keys",
    ),
    "production-without-business-rules": (
        ("--set", "businessRules.existingConfigMap="),
        "the production profile refuses to start without the certificate types' business rules",
    ),
    "production-without-broker": (
        ("--set", "broker.existingSecret="),
        "the production profile refuses to start without the message broker",
    ),
    "unknown-mode": (("--set", "callers.mode=mesh"), "callers.mode must be ingress or direct"),
    "no-client-ca": (
        ("--set", "callers.clientCa.existingSecret="),
        "callers.clientCa.existingSecret: name the Secret",
    ),
    "no-permission-table": (
        ("--set", "callers.permissions.existingSecret="),
        "callers.permissions.existingSecret: name the Secret with the permission table",
    ),
    "no-data-keys": (("--set", "dataKeys.existingSecret="), "dataKeys.existingSecret: name the Secret"),
    "no-audit-signing-key": (
        ("--set", "audit.signingKey.existingSecret="),
        "audit.signingKey.existingSecret: name the Secret",
    ),
    "ingress-mode-without-trusted-proxies": (
        ("--set", "callers.ingress.trustedProxies=null"),
        "callers.ingress.trustedProxies: list the ingress controller pods' IPs or CIDRs",
    ),
    "trusted-proxy-not-an-address": (
        ("--set", "callers.ingress.trustedProxies={ingress-nginx}"),
        '"ingress-nginx" is not an IP address or CIDR',
    ),
    "every-peer-trusted": (
        ("--set", "callers.ingress.trustedProxies={10.244.0.0/16,0.0.0.0/0}"),
        "0.0.0.0/0 trusts every peer",
    ),
    "ingress-not-verifying": (
        ("--set", "callers.ingress.verifyClient=optional_no_ca"),
        "callers.ingress.verifyClient must be",
    ),
    "mtls-ingress-without-tls": (("--set", "ingress.enabled=true"), "ingress.tls: in ingress mode"),
    "ca-under-a-key-ingress-nginx-ignores": (
        (
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.tls[0].secretName=t",
            "--set",
            "callers.clientCa.key=bundle.pem",
        ),
        "callers.clientCa.key must be ca.crt",
    ),
    "direct-mode-without-server-tls": (
        ("--set", "callers.mode=direct"),
        "callers.direct.tlsSecret: in direct mode the service terminates TLS itself",
    ),
    "direct-mode-with-ingress-tls": (
        (
            "--set",
            "callers.mode=direct",
            "--set",
            "callers.direct.tlsSecret=s",
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.tls[0].secretName=t",
        ),
        "ingress.tls would never be used",
    ),
    "mtls-annotation-by-hand": (
        ("--set", "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/auth-tls-verify-client=off"),
        "auth-tls-verify-client is set by the chart",
    ),
    "profile-through-extra": (
        ("--set", "config.extra.INTYG_PROFILE=development"),
        "INTYG_PROFILE is set by the chart",
    ),
    "secret-through-extra": (
        ("--set", "config.extra.INTYG_DATABASE_URL=postgresql://u:p@h/d"),
        "INTYG_DATABASE_URL is set by the chart",
    ),
    "secret-file-through-extra": (
        ("--set", "config.extra.INTYG_KEYS_FILE=/tmp/k.json"),
        "INTYG_KEYS_FILE is set by the chart",
    ),
    "no-fs-group": (("--set", "podSecurityContext.fsGroup=null"), "podSecurityContext.fsGroup"),
    "shared-mount-directory": (
        ("--set", "dataKeys.mountPath=/etc/intygstjanst/audit"),
        "mount path /etc/intygstjanst/audit is used twice",
    ),
    "metrics-on-the-api-port": (("--set", "metricsPort=8080"), "metricsPort must differ from containerPort"),
    "metrics-port-through-extra": (
        ("--set", "config.extra.INTYG_METRICS_PORT=8080"),
        "INTYG_METRICS_PORT is set by the chart",
    ),
    "public-base-url-through-extra": (
        ("--set", "config.extra.INTYG_PUBLIC_BASE_URL=https://a.example"),
        "INTYG_PUBLIC_BASE_URL is set by the chart",
    ),
    "prefix-the-service-is-not-told": (
        ("--set", "ingress.enabled=true", "--set", "ingress.tls[0].secretName=t", *PREFIXED_PATH),
        "ingress path /intygstjanst(/|$)(.*): set config.publicBaseUrl with the prefix",
    ),
}


@pytest.mark.parametrize(("settings", "message"), MISCONFIGURATIONS.values(), ids=MISCONFIGURATIONS.keys())
def test_misconfiguration_fails_rendering_with_a_reason(settings: tuple[str, ...], message: str) -> None:
    done = helm(*template_args(*SITE, *settings), check=False)
    assert done.returncode != 0
    assert message in done.stderr


def test_the_bare_chart_asks_for_the_ingress_controllers_network() -> None:
    """The default values render nothing until the site names its trusted proxies: no default is safe."""
    done = helm(*template_args(*JWKS), check=False)
    assert done.returncode != 0
    assert "callers.ingress.trustedProxies" in done.stderr


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


@pytest.mark.parametrize("scenario", ["default", "production", "direct"])
def test_deployment_is_locked_down(scenario: str) -> None:
    manifests = render(scenario)
    pod_and_container_security(only(manifests, "Deployment"))
    pod_and_container_security(only(manifests, "Job", "-migrate"))


def test_deployment_serves_on_8080_with_probes_and_graceful_stop() -> None:
    deployment = only(render("default"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert c["command"] == ["intygstjanst", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9464, "protocol": "TCP"},
    ]
    assert env_of(c)["INTYG_METRICS_PORT"] == {"name": "INTYG_METRICS_PORT", "value": "9464"}
    # Ingress mode: TLS ends at the Ingress, the pod serves plain HTTP.
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http", "scheme": "HTTP"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "scheme": "HTTP"}
    assert c["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http", "scheme": "HTTP"}
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
        "INTYG_PROFILE": "production",
        "INTYG_LOG_LEVEL": "INFO",
        "INTYG_TIMEZONE": "Europe/Stockholm",
        "INTYG_DB_POOL_SIZE": "10",
        "INTYG_PORTAL_ISSUER": "intygstjanst-dev-portal",
        "INTYG_PORTAL_AUDIENCE": "intygstjanst",
        "INTYG_TRUSTED_PROXIES": "10.244.0.0/16",
        "INTYG_CLIENT_CERT_HEADER": "ssl-client-cert",
    }
    # A changed ConfigMap rolls the pods.
    assert "checksum/config" in deployment["spec"]["template"]["metadata"]["annotations"]


PUBLIC = "https://intyg.example.se/intygstjanst"
FORWARDED_PREFIX = "ingress.annotations.nginx\\.ingress\\.kubernetes\\.io/x-forwarded-prefix=/intygstjanst"


@pytest.mark.parametrize(
    ("told", "public_base_url"),
    [(("--set", f"config.publicBaseUrl={PUBLIC}"), PUBLIC), (("--set-string", FORWARDED_PREFIX), None)],
    ids=["public base URL", "forwarded prefix"],
)
def test_an_ingress_under_a_prefix_renders_once_the_service_is_told_the_prefix(
    told: tuple[str, ...], public_base_url: str | None
) -> None:
    # The WSDLs' soap:address then carries the prefix: from INTYG_PUBLIC_BASE_URL, or from the
    # controller's X-Forwarded-Prefix, which the service takes from its trusted proxies only.
    ingress = ("--set", "ingress.enabled=true", "--set", "ingress.tls[0].secretName=t")
    manifests = rendered(*SITE, *ingress, *PREFIXED_PATH, *told)

    (rule,) = only(manifests, "Ingress")["spec"]["rules"]
    assert rule["http"]["paths"][0]["path"] == "/intygstjanst(/|$)(.*)"
    assert (
        only(manifests, "ConfigMap", "intygstjanst")["data"].get("INTYG_PUBLIC_BASE_URL") == public_base_url
    )


def test_the_production_profile_is_the_charts_default() -> None:
    assert values()["config"]["profile"] == "production"
    assert "INTYG_PROFILE" not in values()["config"]["extra"]
    assert only(render("default"), "ConfigMap", "intygstjanst")["data"]["INTYG_PROFILE"] == "production"


def test_the_development_profile_runs_without_the_portals_keys() -> None:
    manifests = rendered(*PROXIES, "--set", "config.profile=development")
    assert only(manifests, "ConfigMap", "intygstjanst")["data"]["INTYG_PROFILE"] == "development"
    # Without a JWKS nothing is mounted and the service is not pointed at a file.
    c = container(only(manifests, "Deployment"))
    assert "INTYG_PORTAL_JWKS_FILE" not in env_of(c)
    assert "portal-jwks" not in mounts_of(c)


def test_the_broker_url_comes_from_its_secret_to_the_server_only() -> None:
    """README.md, "Recipients and statistics": the relay runs in the server; the URL holds a password."""
    manifests = render("default")
    broker = env_of(container(only(manifests, "Deployment")))["INTYG_BROKER_URL"]
    assert broker["valueFrom"]["secretKeyRef"] == {"name": "intygstjanst-broker", "key": "url"}
    assert "INTYG_BROKER_URL" not in only(manifests, "ConfigMap", "intygstjanst")["data"]
    job = only(manifests, "Job")
    assert "INTYG_BROKER_URL" not in env_of(job["spec"]["template"]["spec"]["containers"][0])


def test_the_development_profile_may_leave_the_events_in_the_outbox() -> None:
    manifests = rendered(*PROXIES, "--set", "config.profile=development", "--set", "broker.existingSecret=")
    assert "INTYG_BROKER_URL" not in env_of(container(only(manifests, "Deployment")))


@pytest.mark.parametrize("env", list(SECRET_FILES))
def test_every_secret_file_is_mounted_read_only_from_its_secret(env: str) -> None:
    assert_mounted_from_secret(only(render("default"), "Deployment"), env, SECRET_FILES)


def test_ingress_mode_trusts_the_certificate_header_only_from_the_listed_proxies() -> None:
    manifests = rendered(*JWKS, "--set", "callers.ingress.trustedProxies={10.244.0.0/16,10.245.1.7}")
    data = only(manifests, "ConfigMap", "intygstjanst")["data"]
    assert data["INTYG_TRUSTED_PROXIES"] == "10.244.0.0/16,10.245.1.7"
    assert data["INTYG_CLIENT_CERT_HEADER"] == "ssl-client-cert"
    # The service itself does not terminate TLS in ingress mode.
    env = env_of(container(only(manifests, "Deployment")))
    assert not env.keys() & SERVER_TLS_FILES.keys()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_secrets_never_reach_the_configmap(scenario: str) -> None:
    manifests = render(scenario)
    assert "Secret" not in kinds(manifests)  # the chart holds no secret: operators' Secrets only
    data = only(manifests, "ConfigMap", "intygstjanst")["data"]
    assert not data.keys() & SECRET_SETTINGS
    assert not any(value.startswith("/etc/intygstjanst/") for value in data.values())
    for workload in (only(manifests, "Deployment"), only(manifests, "Job", "-migrate")):
        for e in container(workload)["env"]:
            if e["name"] == "INTYG_DATABASE_URL":
                assert set(e) == {"name", "valueFrom"}
            elif e["name"] in SECRET_SETTINGS:
                # a path to a file of a read-only Secret mount, never the secret itself
                mount = next(
                    m for m in container(workload)["volumeMounts"] if e["value"].startswith(m["mountPath"])
                )
                assert mount["readOnly"] is True


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
    assert backend == {
        "name": only(manifests, "Service", "intygstjanst")["metadata"]["name"],
        "port": {"name": "http"},
    }
    assert ingress["spec"]["tls"]
    # The portal's JWKS is mounted read-only, and the service is pointed at it.
    mount = next(m for m in c["volumeMounts"] if m["name"] == "portal-jwks")
    assert mount["readOnly"] is True
    assert env_of(c)["INTYG_PORTAL_JWKS_FILE"]["value"] == f"{mount['mountPath']}/jwks.json"
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "portal-jwks")
    assert volume["secret"]["secretName"] == "intygstjanst-portal-jwks"


@pytest.mark.parametrize("scenario", ["default", "production"])
def test_the_business_rules_are_mounted_read_only_from_their_configmap_and_named_to_the_service(
    scenario: str,
) -> None:
    deployment = only(render(scenario), "Deployment")
    c = container(deployment)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "business-rules")
    assert mount["readOnly"] is True
    assert env_of(c)["INTYG_BUSINESS_RULES_DIR"]["value"] == mount["mountPath"]
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "business-rules"
    )
    assert volume["configMap"]["name"] == "intygstjanst-business-rules"


def test_jwks_from_a_configmap() -> None:
    out = helm(
        *template_args(*PROXIES, *BUSINESS_RULES, "--set", "portalJwks.existingConfigMap=portal-keys")
    ).stdout
    deployment = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "portal-jwks")
    assert volume["configMap"]["name"] == "portal-keys"
    assert (
        env_of(container(deployment))["INTYG_PORTAL_JWKS_FILE"]["value"]
        == "/etc/intygstjanst/portal/jwks.json"
    )


# --- callers: mutual TLS at the Ingress, or in the service ---------------------------------------------


def test_production_ingress_verifies_client_certificates_against_the_mounted_ca() -> None:
    """ingress-nginx verifies against the same Secret the service mounts, and forwards the certificate."""
    manifests = render("production")
    annotations = only(manifests, "Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-tls-verify-client"] == "on"
    assert annotations["nginx.ingress.kubernetes.io/auth-tls-secret"] == f"{NAMESPACE}/intygstjanst-siths-ca"
    assert annotations["nginx.ingress.kubernetes.io/auth-tls-verify-depth"] == "2"
    assert annotations["nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream"] == "true"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "4m"  # the operator's own survive
    assert "nginx.ingress.kubernetes.io/ssl-passthrough" not in annotations
    deployment = only(manifests, "Deployment")
    assert volumes_of(deployment)["client-ca"]["secret"]["secretName"] == "intygstjanst-siths-ca"
    data = only(manifests, "ConfigMap", "intygstjanst")["data"]
    assert data["INTYG_TRUSTED_PROXIES"] == "10.244.0.0/16"
    assert data["INTYG_CLIENT_CERT_HEADER"] == "ssl-client-cert"


def test_ingress_may_leave_the_certificate_optional_for_the_citizen_api() -> None:
    manifests = rendered(
        *SITE,
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.tls[0].secretName=intygstjanst-tls",
        "--set",
        "callers.ingress.verifyClient=optional",
    )
    annotations = only(manifests, "Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-tls-verify-client"] == "optional"
    assert annotations["nginx.ingress.kubernetes.io/auth-tls-secret"] == f"{NAMESPACE}/intygstjanst-client-ca"


@pytest.mark.parametrize("env", list(SECRET_FILES) + list(SERVER_TLS_FILES))
def test_direct_mode_mounts_the_server_certificate_and_every_other_secret_file(env: str) -> None:
    files = {**SECRET_FILES, **SERVER_TLS_FILES}
    assert_mounted_from_secret(only(render("direct"), "Deployment"), env, files)


def test_direct_mode_serves_https_and_trusts_no_proxy() -> None:
    manifests = render("direct")
    c = container(only(manifests, "Deployment"))
    assert c["ports"] == [
        {"name": "https", "containerPort": 8080, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9464, "protocol": "TCP"},
    ]
    # Client certificates are optional at the handshake, so kubelet's probes need none; it skips
    # verifying the server certificate.
    for probe, path in (
        ("startupProbe", "/livez"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ):
        assert c[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}
    service = only(manifests, "Service", "intygstjanst")
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 8080, "targetPort": "https", "protocol": "TCP"}
    ]
    data = only(manifests, "ConfigMap", "intygstjanst")["data"]
    assert "INTYG_TRUSTED_PROXIES" not in data
    assert "INTYG_CLIENT_CERT_HEADER" not in data
    # TLS or not, the NetworkPolicy admits the same two ports.
    rules = only(manifests, "NetworkPolicy")["spec"]["ingress"]
    assert [rule["ports"] for rule in rules] == [
        [{"port": 8080, "protocol": "TCP"}],
        [{"port": 9464, "protocol": "TCP"}],
    ]


def test_direct_mode_ingress_passes_tls_through_to_the_service() -> None:
    manifests = render("direct")
    ingress = only(manifests, "Ingress")
    assert ingress["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/ssl-passthrough": "true"}
    assert "tls" not in ingress["spec"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["port"] == {"name": "https"}


def test_direct_mode_service_monitor_scrapes_the_metrics_port_over_plain_http() -> None:
    # The metrics port speaks plain HTTP whatever the API speaks (service/cli.py says why).
    [endpoint] = only(render("direct"), "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert "scheme" not in endpoint and "tlsConfig" not in endpoint


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
    # Same settings as the service, inline: the ConfigMap does not exist yet at pre-install. Not the
    # callers' settings: the Job serves no caller, and the service refuses trusted proxies without the
    # CA bundle, which the Job does not mount.
    configmap = only(manifests, "ConfigMap", "intygstjanst")
    env = env_of(c)
    assert "envFrom" not in c
    callers = {"INTYG_TRUSTED_PROXIES", "INTYG_CLIENT_CERT_HEADER"}
    assert callers <= configmap["data"].keys()
    for name, value in configmap["data"].items():
        if name in callers:
            assert name not in env
        else:
            assert env[name]["value"] == value


def test_migration_job_reads_the_data_keys_and_no_other_secret_file() -> None:
    """Migration 0003 encrypts the rows stored before it: it needs the keyring, and only that."""
    job = only(render("default"), "Job", "-migrate")
    assert_mounted_from_secret(job, "INTYG_KEYS_FILE", SECRET_FILES)
    env = env_of(container(job))
    assert not env.keys() & (SECRET_SETTINGS - {"INTYG_KEYS_FILE", "INTYG_DATABASE_URL"})
    assert set(volumes_of(job)) == {"tmp", "data-keys"}


# --- Service, PDB, NetworkPolicy ----------------------------------------------------------------------


def test_service_and_pdb_select_the_server_pods() -> None:
    manifests = render("default")
    pod_labels = only(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = only(manifests, "Service", "intygstjanst")
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


def test_network_policy_admits_callers_to_the_service_port_prometheus_to_the_metrics_port_and_reaches_only_dns_and_postgresql() -> (
    None
):
    manifests = render("default")
    policy = only(manifests, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    # It covers the server's and the migration Job's pods.
    for workload in (only(manifests, "Deployment"), only(manifests, "Job", "-migrate")):
        assert (
            policy["podSelector"]["matchLabels"].items()
            <= workload["spec"]["template"]["metadata"]["labels"].items()
        )
    api, metrics = policy["ingress"]
    # Ingress mode: the callers reach the pods through the ingress controller's namespace, and only
    # to the API's port; Prometheus only to the metrics port (README, INTYG_METRICS_PORT).
    assert api["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert api["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    assert metrics["ports"] == [{"port": 9464, "protocol": "TCP"}]
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    egress_ports = sorted((p["port"], p["protocol"]) for r in policy["egress"] for p in r["ports"])
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (5432, "TCP")]
    assert {"ipBlock": {"cidr": "10.0.0.0/8"}} in policy["egress"][1]["to"]


def test_network_policy_without_prometheus_admits_no_one_to_the_metrics_port() -> None:
    manifests = rendered(*SITE, "--set", "networkPolicy.ingress.prometheusNamespace=")
    [api] = only(manifests, "NetworkPolicy")["spec"]["ingress"]
    assert api["ports"] == [{"port": 8080, "protocol": "TCP"}]


def test_network_policy_with_prometheus_alone_admits_it_to_the_metrics_port_only() -> None:
    manifests = rendered(*SITE, "--set", "networkPolicy.ingress.namespaceSelectors=null")
    [metrics] = only(manifests, "NetworkPolicy")["spec"]["ingress"]
    assert metrics["ports"] == [{"port": 9464, "protocol": "TCP"}]


def test_network_policy_with_no_peers_admits_nothing() -> None:
    out = helm(
        *template_args(
            *SITE,
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
def test_service_monitor_scrapes_the_metrics_service_only(scenario: str) -> None:
    manifests = render(scenario)
    monitor = only(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == MONITORING_API
    service = only(manifests, "Service", "intygstjanst")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # It scrapes the metrics port of the -metrics Service, which the API's Service does not carry.
    metrics = only(manifests, "Service", "-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert metrics["spec"]["type"] == "ClusterIP"
    assert metrics["spec"]["selector"] == service["spec"]["selector"]
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert "scheme" not in endpoint  # plain HTTP
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


def test_the_default_image_is_the_one_tools_build_image_builds() -> None:
    """tools/build-image tags localhost/intygstjanst:<the project's version>, runs it as 10001:10001 and gives
    it the commands the chart runs (tests/ops/test_image.py checks the image itself)."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text("utf-8"))
    assert chart["appVersion"] == version
    script = (ROOT / "tools" / "build-image").read_text("utf-8")
    assert "IMAGE_NAME=${IMAGE_NAME:-localhost/intygstjanst}" in script
    assert "IMAGE_TAG=${IMAGE_TAG:-$VERSION}" in script
    assert "USER_ID=10001" in script
    manifests = render("default")
    for workload in (only(manifests, "Deployment"), only(manifests, "Job", "-migrate")):
        assert container(workload)["image"] == f"localhost/intygstjanst:{version}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["runAsGroup"] == 10001
