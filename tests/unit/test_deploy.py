"""The deployment files say what the README says: one worker container per node holding all its GPUs
(Compose), one GPU per pod scaled by KEDA on the queue's priority lists (Kubernetes), secrets only
from Secrets / .env, one pinned image built with its dependencies in their own layer, migrations that
never block an upgrade. No docker or kubectl here: the files are parsed, validated against their
schemas (kubernetes-validate: the Kubernetes OpenAPI schemas; check-jsonschema: the Compose spec), and
their content checked; the build context is computed with the Docker SDK's own .dockerignore rules."""
from __future__ import annotations

import copy
import json
import posixpath
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import kubernetes_validate
import pytest
import yaml
from docker.utils.build import PatternMatcher, exclude_paths
from dockerfile_parse import DockerfileParser

from genq.core.config import load_settings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra brings tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
GPU = "nvidia.com/gpu"
PRIORITY_STEPS = range(10)  # genq priority p (0..9, higher first) -> Redis list step 9 - p
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.primary.yml", "docker-compose.join.yml")
# The oldest Kubernetes these manifests claim to fit, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
# Custom resources: no schema ships with kubernetes-validate, so the tests below check them field by field.
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication"),
             ("monitoring.coreos.com/v1", "ServiceMonitor")}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
# Third-party images: an exact version (this many numbers) plus the Debian release, never a moving tag.
VERSION_PARTS = {"python": 3, "redis": 3, "postgres": 2}
DEBIAN_RELEASES = ("bookworm", "trixie")


def priority_lists(queue: str) -> list[str]:
    """Celery's Redis priority lists of a queue (transport options sep=":", priority_steps=0..9):
    step 0 (genq priority 9) is the list `queue` itself, step n the list `queue:n`."""
    return [queue if step == 0 else f"{queue}:{step}" for step in PRIORITY_STEPS]


def genq_priority_list(queue: str, priority: int) -> str:
    step = 9 - priority
    return queue if step == 0 else f"{queue}:{step}"


# -- loading -------------------------------------------------------------------------------------------

def pyproject_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def k8s_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def k8s_objects(include_examples: bool = True) -> list[dict]:
    objects = []
    for path in k8s_files():
        if path.name == "kustomization.yaml" or (not include_examples and ".example." in path.name):
            continue
        objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return objects


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def one(kind: str, name: str | None = None) -> dict:
    found = [o for o in k8s_objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def worker_deployment() -> dict:
    return one("Deployment", "genq-worker")


def worker_container() -> dict:
    containers = worker_deployment()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def dashboard_deployment() -> dict:
    return one("Deployment", "genq-dashboard")


def dashboard_container() -> dict:
    [container] = dashboard_deployment()["spec"]["template"]["spec"]["containers"]
    return container


def pod_specs() -> dict[str, dict]:
    """Every pod template of the manifests, by kind/name."""
    specs = {}
    for obj in k8s_objects():
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in WORKLOAD_KINDS:
            specs[name] = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            specs[name] = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            specs[name] = obj["spec"]
    return specs


def all_containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def command_of(container: dict) -> list[str]:
    return [str(part) for part in container.get("command", []) + container.get("args", [])]


def option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def client_command(argv: list[str]) -> tuple[str, dict]:
    """`client ARGS...` as the real CLI parses it (without running it): the command's name and its
    options. A command or option the CLI does not have fails here."""
    from genq.client.cli import cli

    assert argv[0] == "client", argv
    command, args = cli, list(argv[1:])
    while isinstance(command, click.Group):
        assert args and args[0] in command.commands, f"no such command: {argv}"
        command = command.commands[args.pop(0)]
    return command.name, command.make_context(command.name, args).params


def compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((REPO / name).read_text())


def genq_services() -> dict[str, dict]:
    """The Compose services that run the genq image (the rest are Redis and PostgreSQL)."""
    return {name: s for name, s in compose()["services"].items()
            if "build" in s or re.split(r"[:@]", str(s.get("image", "")))[0] == "genq"}


def dockerfile() -> list[dict]:
    """The Dockerfile's instructions, comments left out (continuation lines joined)."""
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    return [step for step in parser.structure if step["instruction"] != "COMMENT"]


def copy_args(step: dict) -> tuple[list[str], str]:
    """(sources, destination) of a COPY or ADD."""
    args = [a for a in shlex.split(step["value"]) if not a.startswith("--")]
    return args[:-1], args[-1]


def dockerignore_patterns() -> list[str]:
    """The patterns as docker-py's APIClient.build reads .dockerignore."""
    path = REPO / ".dockerignore"
    assert path.is_file(), ".dockerignore is missing: the build context would hold .venv and .git"
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#")]


def assert_pinned(image: str) -> None:
    """An exact version and Debian release (NAME:1.2.3-VARIANT-bookworm), optionally @sha256:DIGEST."""
    match = re.fullmatch(r"(?P<name>[\w./-]+):(?P<version>\d+(?:\.\d+)+)-(?P<variant>[\w.-]+?)"
                         r"(?:@sha256:[0-9a-f]{64})?", image)
    assert match, f"{image}: not an exact version tag (NAME:X.Y.Z-<debian release>)"
    name = match["name"].rsplit("/", 1)[-1]
    assert name in VERSION_PARTS, f"{image}: how many numbers make its version exact? (VERSION_PARTS)"
    assert len(match["version"].split(".")) == VERSION_PARTS[name], f"{image}: a moving tag ({name}:{match['version']})"
    assert match["variant"].split("-")[-1] in DEBIAN_RELEASES, f"{image}: the Debian release is not pinned"


# -- the priority-list mapping the manifests rely on ------------------------------------------------------

def test_priority_lists_follow_celerys_redis_priority_steps():
    assert priority_lists("gpu") == ["gpu", "gpu:1", "gpu:2", "gpu:3", "gpu:4", "gpu:5", "gpu:6", "gpu:7", "gpu:8", "gpu:9"]
    assert genq_priority_list("gpu", 9) == "gpu"
    assert genq_priority_list("gpu", 5) == "gpu:4"  # the default priority
    assert genq_priority_list("gpu", 0) == "gpu:9"
    assert {genq_priority_list("gpu", p) for p in range(10)} == set(priority_lists("gpu"))


def test_the_workers_own_mapping_agrees_with_these_manifests():
    from genq.core.broker import priority_lists as workers_priority_lists

    assert workers_priority_lists("gpu") == priority_lists("gpu")
    assert workers_priority_lists("cpu") == priority_lists("cpu")


# -- every Kubernetes file ----------------------------------------------------------------------------------

def test_every_manifest_parses_and_names_itself():
    assert k8s_files(), "deploy/k8s/*.yaml is missing"
    objects = k8s_objects()
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Secret", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service", "ServiceMonitor",
            "PodDisruptionBudget", "ScaledObject", "TriggerAuthentication"} <= kinds
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind"), obj
        assert obj.get("metadata", {}).get("name"), obj
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "genq", obj["metadata"]["name"]


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(k8s_version):
    """kubernetes-validate, strict (an unknown field fails, as a misspelt one would be dropped by the API
    server), on every object of every file, the Secret examples included."""
    without_schema = set()
    for obj in k8s_objects():
        try:
            kubernetes_validate.validate(obj, k8s_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            without_schema.add((obj["apiVersion"], obj["kind"]))
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is not valid Kubernetes {k8s_version}: "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")
    # Only the custom resources go unvalidated: a core kind under a misspelt apiVersion would land here.
    assert without_schema <= CRD_KINDS, without_schema - CRD_KINDS
    # and the validation is not vacuous: a misspelt field fails it
    typo = copy.deepcopy(worker_deployment())
    typo["spec"]["template"]["spec"]["automountServiceAccountTokn"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, k8s_version, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_examples():
    listed = set(kustomization()["resources"])
    assert kustomization()["kind"] == "Kustomization" and kustomization()["namespace"] == "genq"
    for name in listed:
        assert (K8S / name).is_file(), name
    files = {p.name for p in k8s_files()} - {"kustomization.yaml"}
    assert listed == {name for name in files if ".example." not in name}
    # an apply must never overwrite real Secrets with placeholders
    for name in listed:
        assert all(doc["kind"] != "Secret" for doc in yaml.safe_load_all((K8S / name).read_text()) if doc)


def test_secrets_are_placeholders_only():
    secrets = [o for o in k8s_objects() if o["kind"] == "Secret"]
    assert {s["metadata"]["name"] for s in secrets} == {"genq-urls", "genq-s3", "genq-keda", "genq-ui"}
    for secret in secrets:
        assert "data" not in secret  # base64 would hide what is in it
        assert secret["stringData"]
        for key, value in secret["stringData"].items():
            assert "CHANGE-ME" in value, f"{secret['metadata']['name']}.{key} must be a marked placeholder"
    urls = one("Secret", "genq-urls")["stringData"]
    assert set(urls) == {"GENQ_DATABASE_URL", "GENQ_BROKER_URL"}
    assert set(one("Secret", "genq-ui")["stringData"]) == {"token"}
    assert set(one("Secret", "genq-s3")["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert set(one("Secret", "genq-keda")["stringData"]) == {"connection"}
    # nothing secret anywhere else
    for obj in k8s_objects(include_examples=False):
        text = yaml.safe_dump(obj)
        assert "://" not in text or not re.search(r"://[^/\s@]*:[^/\s@]+@", text), obj["metadata"]["name"]
        assert "PASSWORD" not in text.upper() or obj["kind"] == "TriggerAuthentication", obj["metadata"]["name"]


# -- every pod ----------------------------------------------------------------------------------------------

def test_every_container_runs_the_one_versioned_genq_image_and_pulls_it_once():
    """A version tag (the one in pyproject.toml) is never pushed twice, so IfNotPresent fits it; `latest`
    with IfNotPresent would keep whatever a node pulled first, whatever was applied since."""
    images = set()
    for name, spec in pod_specs().items():
        for container in all_containers(spec):
            ref = re.fullmatch(r"genq(?::(?P<tag>[\w.-]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?", container["image"])
            assert ref, f"{name}/{container['name']}: {container['image']} is not the genq image"
            assert ref["digest"] or ref["tag"] == pyproject_version(), f"{name}/{container['name']}: {container['image']}"
            assert container.get("imagePullPolicy") == "IfNotPresent", f"{name}/{container['name']}"
            images.add(container["image"])
    assert len(images) == 1, images
    [entry] = [image for image in kustomization()["images"] if image["name"] == "genq"]
    assert entry.get("digest") or str(entry["newTag"]) == pyproject_version(), entry
    assert str(entry.get("newTag")) != "latest"


def test_every_emptydir_has_a_size_limit():
    """An emptyDir without one can fill the node's disk (or memory, for medium: Memory)."""
    for name, spec in pod_specs().items():
        for volume in spec.get("volumes", []):
            if "emptyDir" in volume:
                assert (volume["emptyDir"] or {}).get("sizeLimit"), f"{name}: emptyDir {volume['name']} has no sizeLimit"
    home = {v["name"]: v for v in worker_deployment()["spec"]["template"]["spec"]["volumes"]}["home"]
    assert home["emptyDir"]["sizeLimit"]


def test_only_the_worker_pods_hold_a_token_and_it_may_only_patch_pods():
    """The dashboard and the init containers never talk to the Kubernetes API: no token. A worker sets its
    own pod's deletion cost: its service account is bound to one Role that may patch pods, nothing more."""
    assert pod_specs()
    for name, spec in pod_specs().items():
        if name != "Deployment/genq-worker":
            assert spec.get("automountServiceAccountToken") is False, name
    spec = worker_deployment()["spec"]["template"]["spec"]
    account = one("ServiceAccount", spec["serviceAccountName"])["metadata"]["name"]
    bindings = [b for b in k8s_objects() if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and any(s["kind"] == "ServiceAccount" and s["name"] == account for s in b["subjects"])]
    assert [b["kind"] for b in bindings] == ["RoleBinding"]
    role = one(bindings[0]["roleRef"]["kind"], bindings[0]["roleRef"]["name"])
    assert role["kind"] == "Role" and role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in worker_container()["env"] if "valueFrom" in e}
    assert env == {"GENQ_POD_NAME": "metadata.name", "GENQ_POD_NAMESPACE": "metadata.namespace"}


def test_migrations_run_in_an_init_container_of_every_deployment_not_in_a_job():
    """A Job's pod template is immutable: with a Job in the kustomization, `kubectl apply -k` with a new
    image fails while the old Job exists, and the workers crash-loop on the old schema meanwhile. An init
    container runs `client db upgrade` before each pod's genq starts, with that pod's image."""
    assert not [o["metadata"]["name"] for o in k8s_objects() if o["kind"] in ("Job", "CronJob")]
    deployments = [o for o in k8s_objects() if o["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"genq-worker", "genq-dashboard"}
    home = one("ConfigMap", "genq-settings")["data"]["GENQ_HOME"]
    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        [init] = spec["initContainers"]
        [main] = spec["containers"]
        assert client_command(command_of(init)) == ("upgrade", {})  # `client db upgrade`
        assert command_of(init) == ["client", "db", "upgrade"]
        assert init["image"] == main["image"]
        assert init["envFrom"] == main["envFrom"]  # the same database, the same settings
        assert {"secretRef": {"name": "genq-urls"}} in init["envFrom"]
        assert GPU not in init.get("resources", {}).get("limits", {})  # a GPU would wait for nothing
        assert init["securityContext"]["allowPrivilegeEscalation"] is False
        if init["securityContext"].get("readOnlyRootFilesystem"):
            assert {home, "/tmp"} <= {m["mountPath"] for m in init["volumeMounts"]}


# -- the worker Deployment --------------------------------------------------------------------------------

def test_worker_requests_exactly_one_gpu_per_pod():
    resources = worker_container()["resources"]
    assert int(resources["limits"][GPU]) == 1
    assert int(resources.get("requests", {}).get(GPU, 1)) == 1
    assert "replicas" not in worker_deployment()["spec"] or worker_deployment()["spec"]["replicas"] == 1


def test_worker_runs_the_supervisor_on_the_gpu_queue():
    argv = command_of(worker_container())
    assert argv[:3] == ["genq-worker", "--gpus", "all"]
    assert option(argv, "--queues") == "gpu"


def test_worker_gets_its_urls_from_the_secret_and_settings_from_the_configmap():
    container = worker_container()
    env_from = container["envFrom"]
    assert {"secretRef": {"name": "genq-urls"}} in env_from
    assert {"configMapRef": {"name": "genq-settings"}} in env_from
    for entry in container.get("env", []):
        assert entry["name"] not in ("GENQ_DATABASE_URL", "GENQ_BROKER_URL"), "the URLs come from the Secret"
        assert not re.search(r"PASSWORD|SECRET|TOKEN", entry["name"], re.IGNORECASE), entry
        assert "://" not in str(entry.get("value", "")), entry
    settings = one("ConfigMap", "genq-settings")["data"]
    assert settings["GENQ_QUEUE"] == "gpu"
    assert not any(k in settings for k in ("GENQ_DATABASE_URL", "GENQ_BROKER_URL"))
    assert all(isinstance(v, str) for v in settings.values())  # a ConfigMap holds strings only
    assert load_settings(dict(settings)).sd_max_batch == int(settings["GENQ_SD_MAX_BATCH"])


def test_artifacts_default_to_an_object_store_with_its_credentials_from_a_secret():
    """No ReadWriteMany volume: the root is an s3:// URL, the keys come from the Secret genq-s3, and
    the folder (a ReadWriteMany claim) is an example to opt into, not applied."""
    settings = one("ConfigMap", "genq-settings")["data"]
    assert load_settings(dict(settings)).artifact_root == settings["GENQ_ARTIFACT_ROOT"].rstrip("/")
    assert settings["GENQ_ARTIFACT_ROOT"].startswith("s3://")
    assert not any(re.search(r"KEY|SECRET", name) for name in settings)  # the keys are not in the ConfigMap
    for container in (worker_container(), dashboard_container()):
        assert {"secretRef": {"name": "genq-s3"}} in container["envFrom"]
    for spec in (worker_deployment()["spec"]["template"]["spec"], dashboard_deployment()["spec"]["template"]["spec"]):
        assert not any("persistentVolumeClaim" in volume for volume in spec["volumes"])
    claim = one("PersistentVolumeClaim", "genq-artifacts")  # the folder option, pvc.example.yaml
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "pvc.example.yaml" not in kustomization()["resources"]


def test_worker_runs_as_the_images_non_root_user_and_may_shut_down_warmly():
    spec = worker_deployment()["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert worker_container()["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["terminationGracePeriodSeconds"] >= 300  # the default 30 s would kill most running jobs
    dockerfile_text = (REPO / "Dockerfile").read_text()
    assert "--uid 10001" in dockerfile_text
    selector = worker_deployment()["spec"]["selector"]["matchLabels"]
    assert selector.items() <= worker_deployment()["spec"]["template"]["metadata"]["labels"].items()


def test_worker_disruption_budget_lets_one_busy_worker_go_at_a_time():
    """Voluntary evictions (drains, the cluster autoscaler) take one worker at a time, each finishing its
    job within the grace period. maxUnavailable, not minAvailable: KEDA sets the count, and a
    minAvailable at or above it would block every drain."""
    pdb = one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= worker_deployment()["spec"]["template"]["metadata"]["labels"].items()
    assert not selector.items() <= dashboard_deployment()["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    text = next(p for p in k8s_files() if "PodDisruptionBudget" in p.read_text()).read_text()
    # it says what it protects, and what it cannot (KEDA's scale-down does not go through evictions)
    assert re.search(r"running job", text) and "KEDA" in text and "terminationGracePeriodSeconds" in text


# -- the dashboard ------------------------------------------------------------------------------------------

def test_dashboard_listens_off_loopback_with_its_token_from_a_secret():
    from genq.client.ui.app import TOKEN_VARIABLE

    container = dashboard_container()
    name, params = client_command(command_of(container))
    assert name == "ui" and params["host"] == "0.0.0.0" and params["port"] == 8265
    [token] = [e for e in container["env"] if e["name"] == TOKEN_VARIABLE]
    assert "value" not in token
    ref = token["valueFrom"]["secretKeyRef"]
    assert ref["key"] in one("Secret", ref["name"])["stringData"]  # the Secret the example documents
    assert {"secretRef": {"name": "genq-urls"}} in container["envFrom"]
    assert {p["containerPort"] for p in container["ports"]} == {8265}
    assert GPU not in container.get("resources", {}).get("limits", {})
    spec = dashboard_deployment()["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container.get("readinessProbe")
    selector = dashboard_deployment()["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dashboard_deployment()["spec"]["template"]["metadata"]["labels"].items()


def test_dashboard_service_selects_the_dashboard_pods_only():
    service = one("Service", "genq-dashboard")
    selector = service["spec"]["selector"]
    assert selector.items() <= dashboard_deployment()["spec"]["template"]["metadata"]["labels"].items()
    assert not selector.items() <= worker_deployment()["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"  # not on the internet by default
    [port] = service["spec"]["ports"]
    container_ports = {p.get("name"): p["containerPort"] for p in dashboard_container()["ports"]}
    assert port["targetPort"] in container_ports or port["targetPort"] in container_ports.values()


def test_servicemonitor_scrapes_metrics_with_the_dashboards_own_token():
    monitor = one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one("Service", "genq-dashboard")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"].get("type", "Bearer") == "Bearer"
    [token] = [e for e in dashboard_container()["env"] if e["name"] == "GENQ_UI_TOKEN"]
    assert endpoint["authorization"]["credentials"] == token["valueFrom"]["secretKeyRef"]
    assert "bearerTokenSecret" not in endpoint and "bearerTokenFile" not in endpoint  # deprecated forms


def test_the_dashboard_accepts_the_bearer_token_a_scraper_sends():
    """What the ServiceMonitor relies on: the dashboard's token guard takes `Authorization: Bearer`."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from genq.client.ui.security import TokenMiddleware

    app = Starlette(routes=[Route("/metrics", lambda request: PlainTextResponse("genq_jobs 0\n"))],
                    middleware=[Middleware(TokenMiddleware, token="the-token")])
    with TestClient(app) as client:
        assert client.get("/metrics", headers={"Authorization": "Bearer the-token"}).status_code == 200
        assert client.get("/metrics", headers={"Authorization": "Bearer another"}).status_code == 401
        assert client.get("/metrics").status_code == 401


# -- KEDA ---------------------------------------------------------------------------------------------------

def scaler_query() -> str:
    [trigger] = one("ScaledObject")["spec"]["triggers"]
    return trigger["metadata"]["query"]


def test_scaledobject_scales_the_worker_on_one_sql_count_of_its_queue():
    scaled = one("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert target["name"] == worker_deployment()["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    [trigger] = scaled["spec"]["triggers"]  # one trigger: a count, not the largest of several
    assert trigger["type"] == "postgresql"
    [queue] = option(command_of(worker_container()), "--queues").split(",")
    assert f"queue = '{queue}'" in trigger["metadata"]["query"]
    assert int(trigger["metadata"]["targetQueryValue"]) == 1  # one job at a time per pod
    assert trigger["authenticationRef"]["name"] == one("TriggerAuthentication")["metadata"]["name"]
    assert not {"password", "connection", "connectionFromEnv"} & set(trigger["metadata"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_trigger_authentication_reads_the_database_connection_from_a_secret():
    auth = one("TriggerAuthentication")
    [ref] = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "connection"
    secret = one("Secret", ref["name"])
    assert secret["stringData"][ref["key"]].startswith("postgresql://")  # libpq's form, not SQLAlchemy's +psycopg


def test_the_scalers_query_counts_the_queued_and_running_jobs_of_its_queue(postgres_url):
    """The query KEDA runs, on a real PostgreSQL at this version's schema, with jobs in every state."""
    from sqlalchemy import text

    from genq.core.kinds.train_vae import TrainVAE
    from genq.core.params import RunOptions
    from genq.core.store.db import make_engine, session_factory, upgrade
    from genq.core.store.jobs import JobStore
    from genq.core.store.states import JobStatus

    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE webhook_attempts, webhook_deliveries, job_logs, job_events, metrics, artifacts, jobs, workers, groups"))
    store = JobStore(session_factory(engine), lambda kind: "gpu")

    def job(status: JobStatus, queue: str = "gpu", priority: int = 5) -> str:
        row = store.create(TrainVAE(epochs=1).with_seed(), options=RunOptions(queue=queue, priority=priority))
        if status in (JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED):
            store.claim(row.id, "pod-1:gpu0", 60)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            store.transition(row.id, JobStatus.RUNNING, status, expected_attempts=1)
        if status is JobStatus.CANCELLED:
            store.transition(row.id, JobStatus.QUEUED, status)
        return row.id

    first = job(JobStatus.QUEUED)
    job(JobStatus.QUEUED, priority=9)
    job(JobStatus.QUEUED, priority=0)
    job(JobStatus.RUNNING)
    job(JobStatus.RUNNING, priority=1)
    for ended in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        job(ended)
    store.create(TrainVAE(epochs=1).with_seed(), depends_on=first)  # waiting: not runnable yet
    job(JobStatus.QUEUED, queue="cpu")
    job(JobStatus.RUNNING, queue="cpu")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all()  # the rows are there
        assert conn.execute(text(scaler_query())).scalar_one() == 5  # 3 queued + 2 running, every priority
    engine.dispose()


def test_scaledobject_comment_says_running_jobs_are_counted():
    text = (K8S / "keda.yaml").read_text()
    assert re.search(r"queued or running", text) and "running job is counted" in text


# -- the image ----------------------------------------------------------------------------------------------

def test_dockerfile_installs_the_dependencies_in_a_layer_only_pyproject_feeds():
    """A code change must not reinstall torch & co.: every COPY before the first `pip install` copies
    pyproject.toml only, and genq itself goes in afterwards with --no-deps."""
    steps = dockerfile()
    installs = [i for i, step in enumerate(steps) if step["instruction"] == "RUN" and "pip install" in step["value"]]
    assert len(installs) >= 2, "one install for the dependencies, one for genq"
    first, last = installs[0], installs[-1]
    before = [src for step in steps[:first] if step["instruction"] in ("COPY", "ADD") for src in copy_args(step)[0]]
    assert before and set(before) <= {"pyproject.toml"}, before
    after = {src for step in steps[first:] if step["instruction"] in ("COPY", "ADD") for src in copy_args(step)[0]}
    assert "src" in after  # src/genq: the package, its parts inside it
    assert "--no-deps" in shlex.split(steps[last]["value"])
    assert not [s for s in steps[first + 1:] if s["instruction"] == "RUN" and "pip install" in s["value"]
                and "--no-deps" not in s["value"]], "a later install would pull dependencies again"


def test_dockerfile_dependency_layer_installs_exactly_pyprojects_dependencies(tmp_path):
    """Run the first install step's `python -c` here, on this pyproject.toml: what pip gets (-r) is the
    project's dependency list, nothing more or less."""
    [step] = [s for s in dockerfile() if s["instruction"] == "RUN" and "pip install" in s["value"]][:1]
    first = shlex.split(step["value"].split("&&")[0])
    assert first[:2] == ["python", "-c"], first
    requirements = re.search(r"pip install [^&]*-r (\S+)", step["value"])[1]
    code = re.sub(r"'[^']*pyproject\.toml'", repr(str(REPO / "pyproject.toml")), first[2])
    code = code.replace(repr(requirements), repr(str(tmp_path / "requirements.txt")))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    listed = (tmp_path / "requirements.txt").read_text().split("\n")
    assert [line for line in listed if line] == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_the_image_runs_outside_its_source_folder():
    """`python -m genq.worker.child` (each worker the supervisor starts) puts its working directory first
    on sys.path: where the repository's genq/ lies there, it shadows the installed package, which alone
    has genq.worker, and every child fails to start."""
    workdir, destinations, envs = "/", [], DockerfileParser(path=str(REPO / "Dockerfile")).envs
    for step in dockerfile():
        if step["instruction"] == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, step["value"]))
        elif step["instruction"] in ("COPY", "ADD"):
            destinations.append(posixpath.normpath(posixpath.join(workdir, copy_args(step)[1])))
    for destination in destinations:
        assert not (destination + "/").startswith(workdir.rstrip("/") + "/"), (workdir, destination)
    assert envs.get("PYTHONSAFEPATH") == "1"  # and the working directory is never on the path anyway


def healthcheck_code() -> tuple[str, str]:
    """(options, Python code) of the Dockerfile's HEALTHCHECK, which must be `python -c CODE` in exec form."""
    steps = [s for s in dockerfile() if s["instruction"] == "HEALTHCHECK"]
    assert len(steps) == 1, "the Dockerfile has no HEALTHCHECK (or several: only the last would count)"
    [step] = steps
    match = re.fullmatch(r"((?:--[\w-]+=\S+\s+)*)CMD\s+(\[.*\])\s*", step["value"], re.DOTALL)
    assert match, step["value"]
    argv = json.loads(match[2])  # Docker reads the exec form as JSON
    assert argv[:2] == ["python", "-c"] and len(argv) == 3, argv
    return match[1], argv[2]


def run_healthcheck(tmp_path: Path, processes: dict[str, list[str]]) -> int:
    """The HEALTHCHECK's code run here against a made-up /proc: pid -> argv (an empty argv: a zombie)."""
    _, code = healthcheck_code()
    proc = tmp_path / "proc"
    for pid, argv in processes.items():
        (proc / pid).mkdir(parents=True)
        (proc / pid / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in argv))
    (proc / "self").mkdir(parents=True, exist_ok=True)  # not a pid
    (proc / "4242").mkdir()  # a process gone between the listing and the read: no cmdline
    assert code.count("/proc") >= 1
    return subprocess.run([sys.executable, "-c", code.replace("/proc", str(proc))], timeout=60).returncode


def test_image_healthcheck_wants_a_live_worker_child_and_touches_no_gpu(tmp_path):
    from genq.worker.supervisor import CHILD_MODULE

    options, code = healthcheck_code()
    assert "--timeout=" in options and "--start-period=" in options
    assert not re.search(r"torch|cuda|nvidia|celery|sqlalchemy|import genq|from genq", code, re.IGNORECASE)
    python = "/usr/local/bin/python3.11"
    supervisor = [python, "/usr/local/bin/genq-worker", "--gpus", "all", "--queues", "gpu"]
    child = [python, "-m", CHILD_MODULE, "--loglevel", "INFO"]
    assert run_healthcheck(tmp_path / "busy", {"1": supervisor, "7": child, "8": child}) == 0
    assert run_healthcheck(tmp_path / "dead", {"1": supervisor}) == 1  # every child died; restarts pending
    assert run_healthcheck(tmp_path / "zombie", {"1": supervisor, "7": []}) == 1
    # under `docker run --init` the supervisor is not PID 1
    assert run_healthcheck(tmp_path / "init", {"1": ["/sbin/docker-init", "--", "genq-worker"], "7": supervisor}) == 1
    # the same image's other commands are not workers: the check has nothing to say about them
    assert run_healthcheck(tmp_path / "ui", {"1": [python, "/usr/local/bin/client", "ui", "--host", "0.0.0.0"]}) == 0
    assert run_healthcheck(tmp_path / "migrate", {"1": [python, "/usr/local/bin/client", "db", "upgrade"]}) == 0


def test_dockerfile_base_image_is_pinned():
    [base] = [s["value"].split()[0] for s in dockerfile() if s["instruction"] == "FROM"]
    assert_pinned(base)


def test_dockerignore_keeps_the_build_context_to_what_the_image_needs():
    patterns = dockerignore_patterns()
    matcher = PatternMatcher(list(patterns))
    # whether or not they exist in this checkout (a developer's, CI's): never sent to the daemon (a folder
    # that matches is skipped whole)
    for path in (".venv", ".venv-ci", ".git", ".genq", ".env", "__pycache__", "core/__pycache__",
                 "client/ui/__pycache__", "worker/child.pyc", ".pytest_cache", "tests/.pytest_cache", "genq.egg-info",
                 "build", "dist", "tests", "bench"):
        assert matcher.matches(path), f"{path} would be in the build context"
    context = exclude_paths(str(REPO), list(patterns), dockerfile="Dockerfile")
    sources = {src for step in dockerfile() if step["instruction"] in ("COPY", "ADD") for src in copy_args(step)[0]}
    assert sources <= context, sources - context  # everything the Dockerfile copies is sent
    for path in context:
        parts = Path(path).parts
        assert not any(p.startswith(".venv") or p in (".git", ".genq", "__pycache__") or p.endswith(".egg-info")
                       for p in parts), path
    size = sum((REPO / path).stat().st_size for path in context if (REPO / path).is_file())
    assert size < 20 * 2**20, f"a {size / 2**20:.0f} MiB build context"


# -- Docker Compose ----------------------------------------------------------------------------------------

def test_every_compose_file_validates_against_the_compose_spec(tmp_path):
    """check-jsonschema with its vendored Compose specification schema."""
    assert sorted(p.name for p in REPO.glob("docker-compose*.yml")) == sorted(COMPOSE_FILES)

    def check(*paths) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                               *map(str, paths)], capture_output=True, text=True, timeout=300)

    result = check(*(REPO / name for name in COMPOSE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    # and the check is not vacuous: a condition Compose does not know fails it
    broken = compose()
    broken["services"]["worker"]["depends_on"]["migrate"]["condition"] = "service_finished"
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    assert check(tmp_path / "docker-compose.yml").returncode != 0


def test_compose_worker_holds_every_gpu_of_the_node_and_runs_the_supervisor():
    worker = compose()["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert worker["command"] == ["genq-worker", "--gpus", "all"]
    # no replica trick: Compose would give every replica the same GPUs
    assert worker["deploy"].get("replicas", 1) == 1
    assert "scale" not in worker
    assert "device_ids" not in devices[0]


def test_compose_builds_one_image_that_every_genq_service_runs():
    services = genq_services()
    assert set(services) == {"migrate", "worker", "ui"}
    assert len({s.get("image") for s in services.values()}) == 1, {n: s.get("image") for n, s in services.items()}
    image = services["worker"]["image"]
    assert image == f"genq:{pyproject_version()}" or re.fullmatch(r"genq@sha256:[0-9a-f]{64}", image), image
    # one build, on the service every node runs (join nodes start only `worker`)
    assert [name for name, s in services.items() if "build" in s] == ["worker"]
    assert services["worker"]["build"] in (".", {"context": "."})


def test_compose_third_party_images_are_pinned():
    for name, service in compose()["services"].items():
        if name not in genq_services():
            assert_pinned(service["image"])


def test_compose_long_running_services_restart_and_one_shots_do_not():
    """After a reboot the daemon starts again exactly the services with a restart policy: all of them
    but the migration, which has run (and the worker and dashboard wait for it when Compose starts them)."""
    for name, service in compose()["services"].items():
        if service.get("command") == ["client", "db", "upgrade"]:
            assert service.get("restart", "no") == "no", name
        else:
            assert service.get("restart") in ("always", "unless-stopped"), name


def test_compose_services_wait_for_healthy_stores_and_the_migration():
    services = compose()["services"]
    for store in ("redis", "postgres"):
        test = services[store]["healthcheck"]["test"]
        assert test and test != ["NONE"] and not services[store]["healthcheck"].get("disable"), store
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "ui"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name


def test_compose_publishes_only_the_dashboard_on_loopback_and_migrates_first():
    services = compose()["services"]
    for name, service in services.items():
        assert "ports" not in service or name == "ui", name
        assert "network_mode" not in service, name  # host networking would publish everything
    assert services["ui"]["ports"] == ["127.0.0.1:8265:8265"]
    assert services["migrate"]["command"] == ["client", "db", "upgrade"]
    assert services["worker"]["user"] == services["migrate"]["user"] == services["ui"]["user"] == "genq"
    assert "artifacts:" + folder_root() in services["worker"]["volumes"]
    assert "artifacts:" + folder_root() in services["ui"]["volumes"]
    assert "artifacts" in compose()["volumes"]


def test_compose_dashboard_requires_its_token_from_env():
    ui = compose()["services"]["ui"]
    name, params = client_command(ui["command"])
    assert name == "ui" and params["host"] == "0.0.0.0" and params["port"] == 8265
    assert re.fullmatch(r"\$\{GENQ_UI_TOKEN:\?[^}]+\}", ui["environment"]["GENQ_UI_TOKEN"])
    worker_env = compose()["services"]["worker"]["environment"]
    assert {k: v for k, v in ui["environment"].items() if k != "GENQ_UI_TOKEN"} == worker_env
    assert "GENQ_UI_TOKEN" not in worker_env
    # its own health check (the image's is a worker's): /metrics, with the token
    check = " ".join(ui["healthcheck"]["test"])
    assert "/metrics" in check and "Bearer" in check and "GENQ_UI_TOKEN" in check and ":8265" in check


def test_compose_passes_optional_settings_through_as_empty_meaning_default():
    env = compose()["services"]["worker"]["environment"]
    passed = {k: v for k, v in env.items() if re.fullmatch(r"\$\{(\w+):-\}", str(v))}
    assert {"GENQ_QUEUE", "GENQ_SD_MAX_BATCH", "GENQ_SD_COMPILE"} <= set(passed)
    for key, value in passed.items():
        assert value == "${%s:-}" % key  # the same name: .env's GENQ_X reaches the container as GENQ_X
    defaults = load_settings({})
    emptied = load_settings({key: "" for key in passed})  # what an unset variable becomes
    assert emptied.queue == defaults.queue == "gpu"
    assert emptied.sd_max_batch == defaults.sd_max_batch and emptied.sd_compile is False
    assert emptied.worker_queues == defaults.worker_queues
    assert "GENQ_WORKER_NAME" not in env  # the supervisor names each child host:gpuN


def folder_root() -> str:
    """The artifact folder the containers use when .env names no GENQ_ARTIFACT_ROOT."""
    value = compose()["services"]["worker"]["environment"]["GENQ_ARTIFACT_ROOT"]
    match = re.fullmatch(r"\$\{GENQ_ARTIFACT_ROOT:-(/[^}]+)\}", value)
    assert match, value
    return match[1]


def test_compose_takes_an_object_store_root_and_its_credentials_from_env():
    for name, service in genq_services().items():
        env = service["environment"]
        if name != "migrate":  # the one-shot migration touches no artifact
            assert f"artifacts:{folder_root()}" in service["volumes"], name
        for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
            assert env[variable] == "${%s:-}" % variable, (name, variable)  # empty: the store's own default
    text = (REPO / ".env.example").read_text()
    assert re.search(r"^#GENQ_ARTIFACT_ROOT=s3://", text, re.MULTILINE)
    assert re.search(r"^#AWS_SECRET_ACCESS_KEY=$", text, re.MULTILINE)


def test_compose_primary_override_publishes_only_on_a_required_address():
    primary = compose("docker-compose.primary.yml")["services"]
    published = {name: s["ports"] for name, s in primary.items() if "ports" in s}
    assert set(published) == {"redis", "postgres"}
    for name, ports in published.items():
        for port in ports:
            # ADDR:HOST:CONTAINER, the address a required variable: never all interfaces by default
            assert re.fullmatch(r"\$\{PUBLISH_ADDR:\?[^}]+\}:\d+:\d+", port), (name, port)
    assert [v.rsplit(":", 1)[1] for v in primary["worker"]["volumes"]] == [folder_root()]
    # the dashboard shows the shared folder too
    assert primary["ui"]["volumes"] == primary["worker"]["volumes"]


def test_compose_join_override_points_the_worker_at_the_first_node():
    join = compose("docker-compose.join.yml")["services"]
    assert set(join) == {"worker"}
    env = join["worker"]["environment"]
    assert "@${PRIMARY_NODE:?" in env["GENQ_DATABASE_URL"] and "${POSTGRES_PASSWORD:?" in env["GENQ_DATABASE_URL"]
    assert "@${PRIMARY_NODE:?" in env["GENQ_BROKER_URL"] and "${REDIS_PASSWORD:?" in env["GENQ_BROKER_URL"]
    assert "ports" not in join["worker"] and "command" not in join["worker"]  # the same supervisor
    assert [v.rsplit(":", 1)[1] for v in join["worker"]["volumes"]] == [folder_root()]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_hold_no_password(name):
    text = (REPO / name).read_text()
    for url in re.findall(r"\w+(?:\+\w+)?://\S+", text):
        userinfo, at, _ = url.split("://", 1)[1].partition("@")
        if at and ":" in userinfo:  # user:password@ (not host:port)
            assert userinfo.split(":", 1)[1].startswith("${"), url


def test_env_example_documents_every_variable_compose_requires_without_values():
    text = (REPO / ".env.example").read_text()
    for variable in ("PUBLISH_ADDR", "PRIMARY_NODE", "SHARED_ARTIFACTS", "NODE_NAME", "COMPOSE_FILE"):
        assert re.search(rf"^#{variable}=", text, re.MULTILINE), variable
    required = {v for name in COMPOSE_FILES for v in re.findall(r"\$\{(\w+):\?", (REPO / name).read_text())}
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "GENQ_UI_TOKEN"} <= required
    for variable in required:
        assert re.search(rf"^#?{variable}=", text, re.MULTILINE), f"{variable} (required by Compose) is not in .env.example"
    active = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert active == ["POSTGRES_PASSWORD=", "REDIS_PASSWORD=", "GENQ_UI_TOKEN="]


# -- the README tells the same story -------------------------------------------------------------------------

def test_readme_section_describes_this_deployment():
    readme = (REPO / "README.md").read_text()
    match = re.search(r"^## Many GPUs, many machines\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert match, "README lacks the section '## Many GPUs, many machines'"
    section = match.group(1)
    for needle in ("genq-worker --gpus all", "client workers", ":gpu0", "docker-compose.primary.yml",
                   "docker-compose.join.yml", "nvidia.com/gpu", "KEDA", "deploy/k8s", "GENQ_UI_TOKEN",
                   "127.0.0.1:8265", "digest"):
        assert needle in section, needle
    assert "queued plus running" in section and "s3://" in section  # what KEDA counts; artifacts in an object store
    assert "count: all" in section and "same GPU" in section  # why not --scale


def test_k8s_readme_lists_every_manifest_and_says_how_upgrades_migrate():
    text = (K8S / "README.md").read_text()
    table = set(re.findall(r"^\| `([\w.-]+\.yaml)` \|", text, re.MULTILINE))
    assert table == {path.name for path in k8s_files()}  # one row per file, none for a file that is gone
    assert re.search(r"^#+ Upgrades", text, re.MULTILINE) and "init container" in text
