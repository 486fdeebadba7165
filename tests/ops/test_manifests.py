"""deploy/: the Kubernetes manifests parse, have the fields `kubectl apply --dry-run=client`
needs (and no misspelt ones, for the fields they use), run only real `payments-svc`
commands, set only variables the code reads, and their numbers agree with the code's
(probe ports, shutdown timing, the jobs' time limits). No cluster is needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from payments_svc.cli import main
from payments_svc.config import ConfigError, load_settings

from .envvars import REPO, code_env_vars

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extras: pip install -e '.[dev]'")

DEPLOY = REPO / "deploy"
NAMESPACE = "payments"
SECRET_NAME = "payments-svc-secrets"
API_VERSIONS = {
    "Namespace": "v1", "ServiceAccount": "v1", "ConfigMap": "v1", "Secret": "v1", "Service": "v1",
    "Deployment": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1", "PodDisruptionBudget": "policy/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# The fields these manifests may use, per object type (a subset of the Kubernetes API: a
# field outside it is a typo, or new here and to be added after checking the API reference).
META = {"name", "namespace", "labels", "annotations"}
SCHEMA: dict[str, set[str]] = {
    "object": {"apiVersion", "kind", "metadata", "spec", "data", "stringData", "type", "automountServiceAccountToken"},
    "metadata": META,
    "Deployment.spec": {"replicas", "revisionHistoryLimit", "selector", "strategy", "template", "minReadySeconds",
                        "progressDeadlineSeconds"},
    "strategy": {"type", "rollingUpdate"},
    "rollingUpdate": {"maxUnavailable", "maxSurge"},
    "selector": {"matchLabels", "matchExpressions"},
    "template": {"metadata", "spec"},
    "pod": {"containers", "initContainers", "restartPolicy", "serviceAccountName", "automountServiceAccountToken",
            "terminationGracePeriodSeconds", "securityContext", "topologySpreadConstraints", "volumes", "affinity",
            "nodeSelector", "tolerations", "priorityClassName", "imagePullSecrets", "enableServiceLinks"},
    "podSecurityContext": {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile", "supplementalGroups"},
    "seccompProfile": {"type", "localhostProfile"},
    "topologySpreadConstraint": {"maxSkew", "topologyKey", "whenUnsatisfiable", "labelSelector", "minDomains"},
    "container": {"name", "image", "imagePullPolicy", "command", "args", "ports", "env", "envFrom", "resources",
                  "readinessProbe", "livenessProbe", "startupProbe", "securityContext", "volumeMounts", "lifecycle"},
    "containerPort": {"name", "containerPort", "protocol"},
    "env": {"name", "value", "valueFrom"},
    "valueFrom": {"secretKeyRef", "configMapKeyRef", "fieldRef"},
    "keyRef": {"name", "key", "optional"},
    "envFrom": {"configMapRef", "secretRef", "prefix"},
    "ref": {"name", "optional"},
    "probe": {"httpGet", "grpc", "tcpSocket", "exec", "initialDelaySeconds", "periodSeconds", "timeoutSeconds",
              "failureThreshold", "successThreshold"},
    "httpGet": {"path", "port", "scheme", "httpHeaders"},
    "grpc": {"port", "service"},
    "resources": {"requests", "limits"},
    "containerSecurityContext": {"allowPrivilegeEscalation", "readOnlyRootFilesystem", "capabilities", "runAsNonRoot",
                                 "runAsUser", "runAsGroup", "privileged", "seccompProfile"},
    "capabilities": {"drop", "add"},
    "volumeMount": {"name", "mountPath", "readOnly", "subPath"},
    "volume": {"name", "emptyDir", "configMap", "secret"},
    "emptyDir": {"medium", "sizeLimit"},
    "Service.spec": {"type", "selector", "ports", "clusterIP", "sessionAffinity", "internalTrafficPolicy"},
    "servicePort": {"name", "port", "targetPort", "protocol", "appProtocol"},
    "PodDisruptionBudget.spec": {"minAvailable", "maxUnavailable", "selector", "unhealthyPodEvictionPolicy"},
    "Job.spec": {"backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "template", "completions",
                 "parallelism"},
    "CronJob.spec": {"schedule", "timeZone", "concurrencyPolicy", "startingDeadlineSeconds", "successfulJobsHistoryLimit",
                     "failedJobsHistoryLimit", "jobTemplate", "suspend"},
    "jobTemplate": {"metadata", "spec"},
    "NetworkPolicy.spec": {"podSelector", "policyTypes", "ingress", "egress"},
    "ingressRule": {"from", "ports"},
    "egressRule": {"to", "ports"},
    "peer": {"podSelector", "namespaceSelector", "ipBlock"},
    "ipBlock": {"cidr", "except"},
    "policyPort": {"port", "endPort", "protocol"},
}


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_all() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:  # an empty document (comments only) is skipped by kubectl too
                docs.append((path, doc))
    return docs


DOCS = load_all()


def of_kind(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in DOCS if d.get("kind") == kind]


def name_of(path: Path, doc: dict) -> str:
    return f"{path.relative_to(REPO)}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def pod_specs() -> Iterator[tuple[str, dict, dict]]:
    """(where, the owning object, its pod spec) for every workload."""
    for path, doc in DOCS:
        spec = doc.get("spec") or {}
        if doc["kind"] in ("Deployment", "Job"):
            yield name_of(path, doc), doc, spec["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield name_of(path, doc), doc, spec["jobTemplate"]["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict, dict, dict]]:
    for where, owner, pod in pod_specs():
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            yield f"{where} container {c['name']}", owner, pod, c


def check_keys(obj: Any, allowed: str, where: str, errors: list[str]) -> None:
    if not isinstance(obj, dict):
        errors.append(f"{where}: expected a mapping, got {type(obj).__name__}")
        return
    unknown = set(obj) - SCHEMA[allowed]
    if unknown:
        errors.append(f"{where}: unknown field(s) {sorted(unknown)} (allowed here: {sorted(SCHEMA[allowed])})")


def check_pod(pod: dict, where: str, errors: list[str]) -> None:
    check_keys(pod, "pod", where, errors)
    if "securityContext" in pod:
        check_keys(pod["securityContext"], "podSecurityContext", where + ".securityContext", errors)
        if "seccompProfile" in pod["securityContext"]:
            check_keys(pod["securityContext"]["seccompProfile"], "seccompProfile", where, errors)
    for t in pod.get("topologySpreadConstraints", []):
        check_keys(t, "topologySpreadConstraint", where + ".topologySpreadConstraints", errors)
    for v in pod.get("volumes", []):
        check_keys(v, "volume", where + ".volumes", errors)
        if "emptyDir" in v:
            check_keys(v["emptyDir"] or {}, "emptyDir", where + ".volumes.emptyDir", errors)
    if not pod.get("containers"):
        errors.append(f"{where}: no containers")
    for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        cw = f"{where} container {c.get('name')}"
        check_keys(c, "container", cw, errors)
        for required in ("name", "image"):
            if not c.get(required):
                errors.append(f"{cw}: {required} is required")
        for port in c.get("ports", []):
            check_keys(port, "containerPort", cw + ".ports", errors)
            if "containerPort" not in port:
                errors.append(f"{cw}: a port needs containerPort")
            if len(port.get("name", "")) > 15:
                errors.append(f"{cw}: port name {port['name']!r} is longer than 15 characters")
        for e in c.get("env", []):
            check_keys(e, "env", cw + ".env", errors)
            if "valueFrom" in e:
                check_keys(e["valueFrom"], "valueFrom", cw + ".env.valueFrom", errors)
                for ref in e["valueFrom"].values():
                    check_keys(ref, "keyRef", cw + ".env.valueFrom", errors)
        for e in c.get("envFrom", []):
            check_keys(e, "envFrom", cw + ".envFrom", errors)
            for key in ("configMapRef", "secretRef"):
                if key in e:
                    check_keys(e[key], "ref", cw + ".envFrom", errors)
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe_name in c:
                probe = c[probe_name]
                check_keys(probe, "probe", f"{cw}.{probe_name}", errors)
                handlers = [h for h in ("httpGet", "grpc", "tcpSocket", "exec") if h in probe]
                if len(handlers) != 1:
                    errors.append(f"{cw}.{probe_name}: exactly one handler, got {handlers}")
                for h in handlers:
                    if h in SCHEMA:
                        check_keys(probe[h], h, f"{cw}.{probe_name}.{h}", errors)
        if "resources" in c:
            check_keys(c["resources"], "resources", cw + ".resources", errors)
        if "securityContext" in c:
            check_keys(c["securityContext"], "containerSecurityContext", cw + ".securityContext", errors)
            if "capabilities" in c["securityContext"]:
                check_keys(c["securityContext"]["capabilities"], "capabilities", cw, errors)
        for m in c.get("volumeMounts", []):
            check_keys(m, "volumeMount", cw + ".volumeMounts", errors)
            if m.get("name") not in {v.get("name") for v in pod.get("volumes", [])}:
                errors.append(f"{cw}: volumeMount {m.get('name')!r} names no volume of the pod")


def test_manifests_exist_and_parse():
    assert manifest_files(), "no manifests under deploy/"
    kinds = {d["kind"] for _, d in DOCS}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Job", "CronJob"} <= kinds, kinds


def test_objects_are_well_formed():
    errors: list[str] = []
    for path, doc in DOCS:
        where = name_of(path, doc)
        kind = doc.get("kind")
        if kind not in API_VERSIONS:
            errors.append(f"{where}: kind {kind!r} is not one these manifests are checked for")
            continue
        if doc.get("apiVersion") != API_VERSIONS[kind]:
            errors.append(f"{where}: apiVersion must be {API_VERSIONS[kind]}, got {doc.get('apiVersion')!r}")
        check_keys(doc, "object", where, errors)
        meta = doc.get("metadata") or {}
        check_keys(meta, "metadata", where + ".metadata", errors)
        if not DNS_LABEL.match(meta.get("name", "")) or len(meta.get("name", "")) > 63:
            errors.append(f"{where}: metadata.name must be a DNS label")
        if kind != "Namespace" and meta.get("namespace") != NAMESPACE:
            errors.append(f"{where}: metadata.namespace must be {NAMESPACE}")
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str):
                errors.append(f"{where}: label {key} must be a string")
        for key, value in (meta.get("annotations") or {}).items():
            if not isinstance(value, str):
                errors.append(f"{where}: annotation {key} must be a string (quote it)")
        if kind in ("ConfigMap", "Secret"):
            for section in ("data", "stringData"):
                for key, value in (doc.get(section) or {}).items():
                    if not isinstance(value, str):
                        errors.append(f"{where}: {section}.{key} must be a string (quote it)")
        spec = doc.get("spec") or {}
        if kind == "Deployment":
            check_keys(spec, "Deployment.spec", where + ".spec", errors)
            check_keys(spec.get("selector", {}), "selector", where + ".spec.selector", errors)
            if "strategy" in spec:
                check_keys(spec["strategy"], "strategy", where + ".spec.strategy", errors)
                if "rollingUpdate" in spec["strategy"]:
                    check_keys(spec["strategy"]["rollingUpdate"], "rollingUpdate", where, errors)
            check_keys(spec["template"], "template", where + ".spec.template", errors)
            labels = spec["template"].get("metadata", {}).get("labels", {})
            selector = spec.get("selector", {}).get("matchLabels", {})
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                errors.append(f"{where}: spec.selector.matchLabels must match the template's labels")
            check_pod(spec["template"]["spec"], where, errors)
        elif kind == "Job":
            check_keys(spec, "Job.spec", where + ".spec", errors)
            check_pod(spec["template"]["spec"], where, errors)
            if spec["template"]["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
                errors.append(f"{where}: a Job's restartPolicy must be Never or OnFailure")
        elif kind == "CronJob":
            check_keys(spec, "CronJob.spec", where + ".spec", errors)
            check_keys(spec["jobTemplate"], "jobTemplate", where + ".spec.jobTemplate", errors)
            check_keys(spec["jobTemplate"]["spec"], "Job.spec", where + ".spec.jobTemplate.spec", errors)
            pod = spec["jobTemplate"]["spec"]["template"]["spec"]
            check_pod(pod, where, errors)
            if pod.get("restartPolicy") not in ("Never", "OnFailure"):
                errors.append(f"{where}: a CronJob's restartPolicy must be Never or OnFailure")
            if len(spec.get("schedule", "").split()) != 5:
                errors.append(f"{where}: schedule must be a 5-field cron expression")
            if len(meta.get("name", "")) > 52:
                errors.append(f"{where}: a CronJob's name must be at most 52 characters")
        elif kind == "Service":
            check_keys(spec, "Service.spec", where + ".spec", errors)
            for port in spec.get("ports", []):
                check_keys(port, "servicePort", where + ".spec.ports", errors)
            if len({p.get("name") for p in spec.get("ports", [])}) != len(spec.get("ports", [])):
                errors.append(f"{where}: Service ports need distinct names")
        elif kind == "NetworkPolicy":
            check_keys(spec, "NetworkPolicy.spec", where + ".spec", errors)
            check_keys(spec.get("podSelector", {}), "selector", where + ".spec.podSelector", errors)
            for direction, rule_kind, peers in (("ingress", "ingressRule", "from"), ("egress", "egressRule", "to")):
                for rule in spec.get(direction, []):
                    check_keys(rule, rule_kind, f"{where}.spec.{direction}", errors)
                    for peer in rule.get(peers, []):
                        check_keys(peer, "peer", f"{where}.spec.{direction}.{peers}", errors)
                        if "ipBlock" in peer:
                            check_keys(peer["ipBlock"], "ipBlock", f"{where}.spec.{direction}.ipBlock", errors)
                    for port in rule.get("ports", []):
                        check_keys(port, "policyPort", f"{where}.spec.{direction}.ports", errors)
                if spec.get(direction) and direction.capitalize() not in spec.get("policyTypes", []):
                    errors.append(f"{where}: has {direction} rules but policyTypes lacks {direction.capitalize()}")
        elif kind == "PodDisruptionBudget":
            check_keys(spec, "PodDisruptionBudget.spec", where + ".spec", errors)
            if ("minAvailable" in spec) == ("maxUnavailable" in spec):
                errors.append(f"{where}: set exactly one of minAvailable and maxUnavailable")
    assert not errors, "\n".join(errors)


def command_path(args: list[str]) -> list[str]:
    """The command names a `payments-svc` argument list resolves to (fails on an unknown one)."""
    command: click.Command = main
    path = []
    for token in args:
        if token.startswith("-"):
            continue
        if not isinstance(command, click.Group):
            break
        found = command.get_command(None, token)
        assert found is not None, f"`payments-svc {' '.join(path + [token])}` is not a command"
        command = found
        path.append(token)
    assert not isinstance(command, click.Group), f"`payments-svc {' '.join(path)}` is a group, not a command"
    return path


def test_every_container_runs_a_real_payments_svc_command():
    seen = set()
    for where, _, _, c in containers():
        argv = [*c.get("command", []), *c.get("args", [])]
        assert argv and argv[0] == "payments-svc", f"{where}: must run payments-svc, runs {argv}"
        path = command_path(argv[1:])
        # Click itself checks the options: --help stops before the command runs.
        result = CliRunner().invoke(main, [*argv[1:], "--help"], prog_name="payments-svc")
        assert result.exit_code == 0, f"{where}: `{' '.join(argv)}`: {result.output}"
        assert f"Usage: payments-svc {' '.join(path)} " in result.output
        seen.add(tuple(argv[1:]))
    assert ("serve",) in seen and ("db", "migrate") in seen, seen


def test_every_job_runs_as_a_worker_and_as_a_cronjob_alternative():
    workers = {tuple(command_path(c["args"])) for _, owner, _, c in containers()
               if owner["kind"] == "Deployment" and "--worker" in c.get("args", [])}
    crons = {tuple(command_path(c["args"])) for _, owner, _, c in containers() if owner["kind"] == "CronJob"}
    jobs = {("callbacks", "dispatch"), ("reconcile",), ("expire", "pending"), ("stellar", "watch")}
    assert workers == jobs and crons == jobs, (workers, crons)


def configmaps() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for _, d in of_kind("ConfigMap")}


def secret_example() -> dict[str, str]:
    (_, secret), = [(p, d) for p, d in of_kind("Secret") if d["metadata"]["name"] == SECRET_NAME]
    return secret.get("stringData", {})


def effective_env(c: dict) -> dict[str, str]:
    """What the container's process sees: its ConfigMaps, then its env entries (secrets
    taken from the example Secret, which holds placeholders)."""
    maps, secrets = configmaps(), secret_example()
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        ref = source.get("configMapRef") or {}
        if ref.get("name") in maps:
            env.update(maps[ref["name"]])
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}) and e["valueFrom"]["secretKeyRef"]["key"] in secrets:
            env[e["name"]] = secrets[e["valueFrom"]["secretKeyRef"]["key"]]
    return env


def test_every_variable_set_is_one_the_code_reads():
    known = set(code_env_vars())
    errors = []
    for path, doc in of_kind("ConfigMap") + of_kind("Secret"):
        for section in ("data", "stringData"):
            errors += [f"{name_of(path, doc)}: {key}" for key in (doc.get(section) or {}) if key not in known]
    for where, _, _, c in containers():
        names = [e["name"] for e in c.get("env", [])]
        assert len(names) == len(set(names)), f"{where}: an env name is set twice"
        errors += [f"{where}: env {n}" for n in names if n not in known]
    assert not errors, "variables the code does not read:\n" + "\n".join(errors)


def test_config_and_secret_references_resolve():
    maps, secrets = configmaps(), secret_example()
    for where, _, _, c in containers():
        for source in c.get("envFrom", []):
            ref = source.get("configMapRef")
            assert ref, f"{where}: envFrom takes ConfigMaps only (secrets are named key by key, so they can be checked)"
            assert ref["name"] in maps, f"{where}: ConfigMap {ref['name']} is not in deploy/"
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                continue
            assert ref["name"] == SECRET_NAME and ref["key"] == e["name"], f"{where}: {e['name']} from {ref}"
            if ref["key"] not in secrets:
                assert ref.get("optional") is True, f"{where}: {ref['key']} is not in the example Secret: mark it optional"
        assert any(e["name"] == "PAYMENTS_DATABASE_URL" for e in c.get("env", [])), f"{where}: no database"


def test_every_container_configuration_loads():
    """Each container's environment passes the service's own settings checks, with a
    provider enabled (production refuses the sandbox)."""
    for where, _, _, c in containers():
        try:
            settings = load_settings(effective_env(c), base_dir=Path("/nonexistent"))
        except ConfigError as exc:
            pytest.fail(f"{where}: {exc}")
        assert settings.is_production and not settings.sandbox_enabled, where
        assert settings.database_url.startswith("mysql+asyncmy://"), where
        reads_stellar = any((s.get("configMapRef") or {}).get("name") == "payments-svc-stellar" for s in c.get("envFrom", []))
        assert (settings.stellar is not None) == reads_stellar, where  # stellar/configmap.yaml parses
        if c.get("args", [])[:2] != ["db", "migrate"]:  # the migration needs only the database
            assert settings.stripe is not None, f"{where}: Stripe is the production provider of these manifests"


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    return float(env.get(name, default))


def test_grace_periods_cover_the_shutdown():
    for where, _, pod, c in containers():
        env = effective_env(c)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        args = c.get("args", [])
        if args[:1] == ["serve"]:
            # Kubernetes' grace period runs from SIGTERM (plus any preStop hook): the drain and
            # the in-flight grace must fit, with room to exit.
            pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            needed = pre_stop + _seconds(env, "PAYMENTS_SHUTDOWN_DRAIN_SECONDS", 0) + \
                _seconds(env, "PAYMENTS_SHUTDOWN_GRACE_SECONDS", 10)
            assert grace >= needed + 3, f"{where}: terminationGracePeriodSeconds {grace} < {needed} + 3"
            assert _seconds(env, "PAYMENTS_SHUTDOWN_DRAIN_SECONDS", 0) > 0, f"{where}: no drain: requests race the endpoint update"
        elif "dispatch" in args:
            needed = _seconds(env, "PAYMENTS_CALLBACK_HTTP_TIMEOUT_SECONDS", 10)
            assert grace > needed, f"{where}: terminationGracePeriodSeconds {grace} <= callback timeout {needed}"
        elif "reconcile" in args or "expire" in args:
            needed = 2 * _seconds(env, "PAYMENTS_PROVIDER_TIMEOUT_SECONDS", 10)
            assert grace > needed, f"{where}: terminationGracePeriodSeconds {grace} <= 2 x provider timeout {needed}"


def test_api_pods_are_probed_and_served_as_the_code_listens():
    (path, api), = [(p, d) for p, d in of_kind("Deployment") if d["spec"]["template"]["spec"]["containers"][0]["args"][:1] == ["serve"]]
    c = api["spec"]["template"]["spec"]["containers"][0]
    env = effective_env(c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": int(env.get("HTTP_PORT", 8080)), "grpc": int(env.get("GRPC_PORT", 9090)),
                     "metrics": int(env["PAYMENTS_METRICS_PORT"])}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["spec"]["replicas"] >= 2
    (_, service), = of_kind("Service")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert {"http", "grpc", "metrics"} <= set(by_name)
    assert by_name["http"]["port"] == 8080 and by_name["grpc"]["port"] == 9090
    assert all(p["targetPort"] in ports for p in service["spec"]["ports"])
    # The metrics port is the metrics listener (/metrics, /healthz), never the API's port.
    assert by_name["metrics"]["targetPort"] == "metrics"


def test_long_running_pods_serve_metrics_and_liveness_on_their_own_port_and_one_off_runs_do_not():
    for where, owner, _, c in containers():
        env = effective_env(c)
        if owner["kind"] == "Deployment":
            port = int(env.get("PAYMENTS_METRICS_PORT", 0))
            assert port, f"{where}: set PAYMENTS_METRICS_PORT so that Prometheus scrapes a port without the API"
            assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in c.get("ports", []), where
            annotations = owner["spec"]["template"]["metadata"].get("annotations", {})
            assert annotations.get("prometheus.io/port") == str(port), where
            if "--worker" in c.get("args", []):
                for probe in ("startupProbe", "livenessProbe"):
                    assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, f"{where}: {probe}"
                assert "readinessProbe" not in c, f"{where}: a worker serves no traffic to be ready for"
        else:
            assert "PAYMENTS_METRICS_PORT" not in env, f"{where}: a one-off run must not open a metrics port"


def _selected(selector: dict) -> list[tuple[str, dict, dict]]:
    """(where, pod labels, container) of the workloads a NetworkPolicy's podSelector picks."""
    wanted = selector.get("matchLabels", {})
    out = []
    for where, owner, _, c in containers():
        template = owner["spec"]["template"] if owner["kind"] != "CronJob" else owner["spec"]["jobTemplate"]["spec"]["template"]
        labels = template.get("metadata", {}).get("labels", {})
        if all(labels.get(k) == v for k, v in wanted.items()):
            out.append((where, labels, c))
    return out


def test_network_policies_let_each_peer_reach_only_its_ports():
    policies = {d["metadata"]["name"]: d["spec"] for _, d in of_kind("NetworkPolicy")}
    assert policies, "no NetworkPolicy example under deploy/"
    deny = [s for s in policies.values() if s["podSelector"] == {} and not s.get("ingress") and not s.get("egress")]
    assert deny and set(deny[0]["policyTypes"]) == {"Ingress", "Egress"}, "start from a default deny"
    reachable: dict[str, set[str]] = {}  # a peer (its namespace labels) -> the named ports it may reach
    for name, spec in policies.items():
        pods = _selected(spec["podSelector"])
        assert pods, f"NetworkPolicy {name} selects no pod of the manifests"
        for rule in spec.get("ingress", []):
            for port in rule["ports"]:
                assert any(port["port"] in {p["name"] for p in c.get("ports", [])} for _, _, c in pods), \
                    f"NetworkPolicy {name}: no selected container has a port named {port['port']}"
            for peer in rule["from"]:
                key = repr(sorted(peer["namespaceSelector"]["matchLabels"].items()))
                reachable.setdefault(key, set()).update(p["port"] for p in rule["ports"])
    monitoring = [ports for peer, ports in reachable.items() if "monitoring" in peer]
    assert monitoring == [{"metrics"}], f"Prometheus must reach the metrics port only: {reachable}"
    assert {"http", "grpc"} in [ports for ports in reachable.values()], "callers reach the API"
    egress_blocks = [peer["ipBlock"] for s in policies.values() for rule in s.get("egress", []) for peer in rule["to"]
                     if "ipBlock" in peer]
    assert egress_blocks and all("169.254.0.0/16" in b.get("except", []) for b in egress_blocks), \
        "egress to the internet must exclude the link-local range (cloud metadata)"


def test_disruption_budgets_select_workloads_with_spare_replicas():
    deployments = [d for _, d in of_kind("Deployment")]
    for path, pdb in of_kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        targets = [d for d in deployments if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                                                 for k, v in selector.items())]
        assert len(targets) == 1, f"{name_of(path, pdb)} selects {len(targets)} Deployments"
        assert targets[0]["spec"]["replicas"] >= 2, f"{name_of(path, pdb)}: a budget on one replica blocks node drains"


def test_the_stellar_watcher_runs_one_copy_at_a_time():
    watchers = [d for _, d in of_kind("Deployment") if d["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["stellar", "watch"]]
    assert len(watchers) == 1
    assert watchers[0]["spec"]["replicas"] == 1 and watchers[0]["spec"]["strategy"] == {"type": "Recreate"}


def test_containers_are_locked_down_and_sized():
    for where, _, pod, c in containers():
        sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, where
        assert sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert pod.get("automountServiceAccountToken") is False, where
        assert c["resources"]["requests"].get("cpu") and c["resources"]["requests"].get("memory"), where
        assert c["resources"]["limits"].get("memory"), where
