"""The deployment files say what the README says: one worker container per node holding all its GPUs
(Compose), one GPU per pod scaled by KEDA on the queue's priority lists (Kubernetes), secrets only
from Secrets / .env. No docker or kubectl here: the files are parsed and their content checked."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from genq.core.config import load_settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
GPU = "nvidia.com/gpu"
PRIORITY_STEPS = range(10)  # genq priority p (0..9, higher first) -> Redis list step 9 - p


def priority_lists(queue: str) -> list[str]:
    """Celery's Redis priority lists of a queue (transport options sep=":", priority_steps=0..9):
    step 0 (genq priority 9) is the list `queue` itself, step n the list `queue:n`."""
    return [queue if step == 0 else f"{queue}:{step}" for step in PRIORITY_STEPS]


def genq_priority_list(queue: str, priority: int) -> str:
    step = 9 - priority
    return queue if step == 0 else f"{queue}:{step}"


# -- loading -------------------------------------------------------------------------------------------

def k8s_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def k8s_objects(include_examples: bool = True) -> list[dict]:
    objects = []
    for path in k8s_files():
        if path.name == "kustomization.yaml" or (not include_examples and ".example." in path.name):
            continue
        objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return objects


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


def command_of(container: dict) -> list[str]:
    return [str(part) for part in container.get("command", []) + container.get("args", [])]


def option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((REPO / name).read_text())


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
    assert {"Namespace", "Secret", "ConfigMap", "PersistentVolumeClaim", "Job", "Deployment",
            "ScaledObject", "TriggerAuthentication"} <= kinds
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind"), obj
        assert obj.get("metadata", {}).get("name"), obj
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "genq", obj["metadata"]["name"]


def test_kustomization_lists_every_manifest_but_the_secret_examples():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization" and kustomization["namespace"] == "genq"
    listed = set(kustomization["resources"])
    for name in listed:
        assert (K8S / name).is_file(), name
    files = {p.name for p in k8s_files()} - {"kustomization.yaml"}
    assert listed == {name for name in files if ".example." not in name}
    # an apply must never overwrite real Secrets with placeholders
    for name in listed:
        assert all(doc["kind"] != "Secret" for doc in yaml.safe_load_all((K8S / name).read_text()) if doc)


def test_secrets_are_placeholders_only():
    secrets = [o for o in k8s_objects() if o["kind"] == "Secret"]
    assert {s["metadata"]["name"] for s in secrets} == {"genq-urls", "genq-redis"}
    for secret in secrets:
        assert "data" not in secret  # base64 would hide what is in it
        assert secret["stringData"]
        for key, value in secret["stringData"].items():
            assert "CHANGE-ME" in value, f"{secret['metadata']['name']}.{key} must be a marked placeholder"
    urls = one("Secret", "genq-urls")["stringData"]
    assert set(urls) == {"GENQ_DATABASE_URL", "GENQ_BROKER_URL"}
    # nothing secret anywhere else
    for obj in k8s_objects(include_examples=False):
        text = yaml.safe_dump(obj)
        assert "://" not in text or not re.search(r"://[^/\s@]*:[^/\s@]+@", text), obj["metadata"]["name"]
        assert "PASSWORD" not in text.upper() or obj["kind"] == "TriggerAuthentication", obj["metadata"]["name"]


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


def test_worker_mounts_the_shared_artifact_claim_at_the_artifact_root():
    claim = one("PersistentVolumeClaim", "genq-artifacts")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    spec = worker_deployment()["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    [artifacts] = [n for n, v in volumes.items() if v.get("persistentVolumeClaim", {}).get("claimName") == "genq-artifacts"]
    mounts = {m["name"]: m["mountPath"] for m in worker_container()["volumeMounts"]}
    assert mounts[artifacts] == one("ConfigMap", "genq-settings")["data"]["GENQ_ARTIFACT_ROOT"]


def test_worker_runs_as_the_images_non_root_user_and_may_shut_down_warmly():
    spec = worker_deployment()["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert worker_container()["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["terminationGracePeriodSeconds"] >= 300  # the default 30 s would kill most running jobs
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--uid 10001" in dockerfile
    selector = worker_deployment()["spec"]["selector"]["matchLabels"]
    assert selector.items() <= worker_deployment()["spec"]["template"]["metadata"]["labels"].items()


def test_migration_job_upgrades_the_database_with_the_secrets_urls():
    job = one("Job", "genq-migrate")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert command_of(container) == ["client", "db", "upgrade"]
    assert {"secretRef": {"name": "genq-urls"}} in container["envFrom"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    assert container["image"] == worker_container()["image"]


# -- KEDA ---------------------------------------------------------------------------------------------------

def test_scaledobject_scales_the_worker_on_exactly_the_priority_lists_it_consumes():
    scaled = one("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert target["name"] == worker_deployment()["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    queues = option(command_of(worker_container()), "--queues").split(",")
    expected = [name for queue in queues for name in priority_lists(queue)]
    triggers = scaled["spec"]["triggers"]
    assert all(t["type"] == "redis" for t in triggers)
    list_names = [t["metadata"]["listName"] for t in triggers]
    assert sorted(list_names) == sorted(expected)  # each list once, none missing, none extra
    for trigger in triggers:
        assert int(trigger["metadata"]["listLength"]) >= 1
        assert trigger["authenticationRef"]["name"] == one("TriggerAuthentication")["metadata"]["name"]
        assert "password" not in trigger["metadata"]  # only through the TriggerAuthentication
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_trigger_authentication_reads_the_redis_password_from_a_secret():
    auth = one("TriggerAuthentication")
    [ref] = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "password"
    secret = one("Secret", ref["name"])
    assert ref["key"] in secret["stringData"]


def test_keda_reads_the_redis_address_from_the_workers_environment():
    settings = one("ConfigMap", "genq-settings")["data"]
    for trigger in one("ScaledObject")["spec"]["triggers"]:
        metadata = trigger["metadata"]
        if "addressFromEnv" in metadata:
            assert metadata["addressFromEnv"] in settings
            assert re.fullmatch(r"[\w.-]+:\d+", settings[metadata["addressFromEnv"]])
        else:
            assert re.fullmatch(r"[\w.-]+:\d+", metadata["address"])


def test_scaledobject_comment_states_the_max_over_triggers_caveat():
    text = (K8S / "keda.yaml").read_text()
    assert re.search(r"LARGEST of the triggers", text)


# -- Docker Compose ----------------------------------------------------------------------------------------

def test_compose_worker_holds_every_gpu_of_the_node_and_runs_the_supervisor():
    worker = compose()["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert worker["command"] == ["genq-worker", "--gpus", "all"]
    # no replica trick: Compose would give every replica the same GPUs
    assert worker["deploy"].get("replicas", 1) == 1
    assert "scale" not in worker
    assert "device_ids" not in devices[0]


def test_compose_default_file_publishes_nothing_and_migrates_first():
    services = compose()["services"]
    for name, service in services.items():
        assert "ports" not in service, name
        assert "network_mode" not in service, name  # host networking would publish everything
    assert services["migrate"]["command"] == ["client", "db", "upgrade"]
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["user"] == services["migrate"]["user"] == "genq"
    env = services["worker"]["environment"]
    assert "artifacts:" + env["GENQ_ARTIFACT_ROOT"] in services["worker"]["volumes"]
    assert "artifacts" in compose()["volumes"]


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


def test_compose_primary_override_publishes_only_on_a_required_address():
    primary = compose("docker-compose.primary.yml")["services"]
    published = {name: s["ports"] for name, s in primary.items() if "ports" in s}
    assert set(published) == {"redis", "postgres"}
    for name, ports in published.items():
        for port in ports:
            # ADDR:HOST:CONTAINER, the address a required variable: never all interfaces by default
            assert re.fullmatch(r"\$\{PUBLISH_ADDR:\?[^}]+\}:\d+:\d+", port), (name, port)
    target = compose()["services"]["worker"]["environment"]["GENQ_ARTIFACT_ROOT"]
    assert [v.rsplit(":", 1)[1] for v in primary["worker"]["volumes"]] == [target]


def test_compose_join_override_points_the_worker_at_the_first_node():
    join = compose("docker-compose.join.yml")["services"]
    assert set(join) == {"worker"}
    env = join["worker"]["environment"]
    assert "@${PRIMARY_NODE:?" in env["GENQ_DATABASE_URL"] and "${POSTGRES_PASSWORD:?" in env["GENQ_DATABASE_URL"]
    assert "@${PRIMARY_NODE:?" in env["GENQ_BROKER_URL"] and "${REDIS_PASSWORD:?" in env["GENQ_BROKER_URL"]
    assert "ports" not in join["worker"] and "command" not in join["worker"]  # the same supervisor
    target = compose()["services"]["worker"]["environment"]["GENQ_ARTIFACT_ROOT"]
    assert [v.rsplit(":", 1)[1] for v in join["worker"]["volumes"]] == [target]


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.primary.yml", "docker-compose.join.yml"])
def test_compose_files_hold_no_password(name):
    text = (REPO / name).read_text()
    for url in re.findall(r"\w+(?:\+\w+)?://\S+", text):
        userinfo = url.split("://", 1)[1].partition("@")[0]
        if ":" in userinfo:
            assert userinfo.split(":", 1)[1].startswith("${"), url


def test_env_example_documents_the_multi_node_variables_without_values():
    text = (REPO / ".env.example").read_text()
    for variable in ("PUBLISH_ADDR", "PRIMARY_NODE", "SHARED_ARTIFACTS", "NODE_NAME", "COMPOSE_FILE"):
        assert re.search(rf"^#{variable}=", text, re.MULTILINE), variable
    active = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert active == ["POSTGRES_PASSWORD=", "REDIS_PASSWORD="]


# -- the README tells the same story -------------------------------------------------------------------------

def test_readme_section_describes_this_deployment():
    readme = (REPO / "README.md").read_text()
    match = re.search(r"^## Many GPUs, many machines\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert match, "README lacks the section '## Many GPUs, many machines'"
    section = match.group(1)
    for needle in ("genq-worker --gpus all", "client workers", ":gpu0", "docker-compose.primary.yml",
                   "docker-compose.join.yml", "nvidia.com/gpu", "KEDA", "deploy/k8s"):
        assert needle in section, needle
    assert "largest of its triggers" in section  # the KEDA caveat
    assert "count: all" in section and "same GPU" in section  # why not --scale
