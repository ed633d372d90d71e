"""launch/k8s/: the kustomize base and overlays, validated offline.

No cluster exists here (and no kubeconform or helm binary in any package registry), so:

* core kinds (the PersistentVolumeClaim) and every replica's pod template, wrapped as a ``v1``
  ``PodTemplate``, go through ``kubernetes-validate --strict`` (the official OpenAPI schemas;
  unknown fields are errors) for the oldest and newest Kubernetes it knows;
* the PyTorchJob goes through the training-operator SDK (``kubeflow-training``): deserialized
  into its model classes and serialized back, any unknown or mistyped field shows as a diff;
  the rules of the operator's admission webhook are checked by hand;
* its torchrun arguments through torchrun's own argument parser, and its trainer overrides
  through a Hydra compose of longseq's train config.

Rendering: ``kubectl kustomize`` (or ``kustomize build``) when a binary exists; otherwise a small
Python renderer that covers what these kustomizations use (resources, labels, images, JSON6902
patches). Where both exist, they must agree.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.k8s

K8S = Path(__file__).resolve().parents[2] / "launch/k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
TARGETS = [K8S / "base", *OVERLAYS]
TARGET_IDS = [str(t.relative_to(K8S)) for t in TARGETS]

kv = pytest.importorskip(
    "kubernetes_validate", reason="pip install -r requirements/lock-launch.txt"
)
kubeflow_api = pytest.importorskip(
    "kubeflow.training.api_client", reason="pip install -r requirements/lock-launch.txt"
)


# -- rendering ---------------------------------------------------------------------------------


def _json_pointer_set(doc: object, path: str, value: object, op: str) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    last = parts[-1]
    if isinstance(node, list):
        if op == "add":
            node.insert(len(node) if last == "-" else int(last), value)
        else:
            node[int(last)] = value
    else:
        if op == "replace" and last not in node:  # type: ignore[operator]
            raise KeyError(f"replace of missing {path}")
        node[last] = value  # type: ignore[index]


def _matches(target: dict, obj: dict) -> bool:
    api = obj.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    want = {
        "group": group,
        "version": version,
        "kind": obj.get("kind"),
        "name": obj.get("metadata", {}).get("name"),
    }
    return all(want[k] == v for k, v in target.items() if k in want)


def python_kustomize(path: Path) -> list[dict]:
    """The subset of kustomize these folders use: resources, labels, images, JSON6902 patches."""
    kust = yaml.safe_load((path / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "labels", "images", "patches"}
    assert set(kust) <= known, f"python_kustomize does not handle {set(kust) - known}"
    docs: list[dict] = []
    for res in kust.get("resources", []):
        res_path = (path / res).resolve()
        if res_path.is_dir():
            docs.extend(python_kustomize(res_path))
        else:
            docs.extend(d for d in yaml.safe_load_all(res_path.read_text()) if d)
    for label in kust.get("labels", []):
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for image in kust.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    new = image.get("newName", name)
                    container["image"] = f"{new}:{image.get('newTag', tag)}".rstrip(":")
    for patch in kust.get("patches", []):
        ops = yaml.safe_load(patch["patch"])
        for doc in docs:
            if _matches(patch.get("target", {}), doc):
                for op in ops:
                    assert op["op"] in ("replace", "add"), op
                    _json_pointer_set(doc, op["path"], op["value"], op["op"])
    return docs


def _containers(doc: dict) -> list[dict]:
    if doc.get("kind") == "PyTorchJob":
        return [
            c
            for spec in doc["spec"]["pytorchReplicaSpecs"].values()
            for c in spec["template"]["spec"]["containers"]
        ]
    return []


def kustomize_binary() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render(path: Path) -> list[dict]:
    """Rendered manifests: the kustomize binary if there is one, else python_kustomize."""
    binary = kustomize_binary()
    if binary is None:
        return python_kustomize(path)
    res = subprocess.run([*binary, str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


@pytest.fixture(scope="module", params=TARGETS, ids=TARGET_IDS)
def rendered(request: pytest.FixtureRequest) -> tuple[Path, list[dict]]:
    return request.param, render(request.param)


def the_job(docs: list[dict]) -> dict:
    jobs = [d for d in docs if d["kind"] == "PyTorchJob"]
    assert len(jobs) == 1, [d["kind"] for d in docs]
    return jobs[0]


# -- validators ----------------------------------------------------------------------------------

K8S_VERSIONS = sorted({kv.utils.major_minor(v) for v in kv.utils.all_versions()})
CHECK_VERSIONS = [K8S_VERSIONS[2], K8S_VERSIONS[-1]]  # 1.27 (oldest still common) .. newest


def strict_validate(obj: dict) -> None:
    for version in CHECK_VERSIONS:
        kv.validate(obj, version, strict=True)


def as_pod_template(name: str, template: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name},
        "template": template,
    }


def sdk_round_trip(job: dict) -> dict:
    client = kubeflow_api.ApiClient()
    model = client._ApiClient__deserialize(copy.deepcopy(job), "KubeflowOrgV1PyTorchJob")
    return client.sanitize_for_serialization(model)


def assert_round_trip(job: dict) -> None:
    back = sdk_round_trip(job)
    assert back == job, "fields lost or retyped by the PyTorchJob model:\n" + "\n".join(
        _diff(job, back)
    )


def _diff(a: object, b: object, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


# -- tests ---------------------------------------------------------------------------------------


def test_every_yaml_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 4, files
    for f in files:
        assert list(yaml.safe_load_all(f.read_text())), f


def test_there_is_an_overlay() -> None:
    assert OVERLAYS, "launch/k8s/overlays/* is empty"


def test_core_resources_pass_strict_schema(rendered: tuple[Path, list[dict]]) -> None:
    _, docs = rendered
    core = [d for d in docs if d["apiVersion"] in ("v1", "apps/v1", "batch/v1")]
    assert any(d["kind"] == "PersistentVolumeClaim" for d in core)
    for doc in core:
        strict_validate(doc)


def test_pod_templates_pass_strict_schema(rendered: tuple[Path, list[dict]]) -> None:
    _, docs = rendered
    job = the_job(docs)
    for rtype, spec in job["spec"]["pytorchReplicaSpecs"].items():
        strict_validate(
            as_pod_template(f"{job['metadata']['name']}-{rtype.lower()}", spec["template"])
        )


def test_pytorchjob_sdk_round_trip(rendered: tuple[Path, list[dict]]) -> None:
    _, docs = rendered
    assert_round_trip(the_job(docs))


def test_pytorchjob_follows_operator_rules(rendered: tuple[Path, list[dict]]) -> None:
    """What the training-operator's admission webhook and controller require or assume."""
    _, docs = rendered
    job = the_job(docs)
    name = job["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name), name  # DNS-1035
    spec = job["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    assert replicas["Master"]["replicas"] == 1
    assert replicas["Worker"]["replicas"] >= 1
    elastic = spec["elasticPolicy"]
    assert "nProcPerNode" not in elastic, "deprecated: use spec.nprocPerNode"
    assert elastic["rdzvBackend"] == "c10d"
    # the c10d store runs on the master's pod, reached through its per-pod service
    assert elastic["rdzvHost"] == f"{name}-master-0"
    nodes = replicas["Master"]["replicas"] + replicas["Worker"]["replicas"]
    assert elastic["minReplicas"] <= nodes <= elastic["maxReplicas"], (elastic, nodes)
    assert elastic["maxRestarts"] >= 1
    nproc = int(spec["nprocPerNode"])
    for rtype, rspec in replicas.items():
        pod = rspec["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == "pytorch"]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert ports.get("pytorchjob-port") == elastic["rdzvPort"], (rtype, ports)
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        assert int(gpus) == nproc, (rtype, gpus, nproc)
        assert pod["securityContext"]["runAsNonRoot"] is True
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE") == "1", "elastic restarts need it"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts.get("dshm") == "/dev/shm"
        shared = [v for v in pod["volumes"] if v["name"] == "shared"]
        claim = shared[0]["persistentVolumeClaim"]["claimName"]
        assert any(
            d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim for d in docs
        )
        # room to checkpoint after SIGTERM: torchrun's shutdown timeout < the grace period
        args = container["args"]
        timeout = int(next(a.split("=", 1)[1] for a in args if a.startswith("--shutdown-timeout=")))
        assert timeout < pod["terminationGracePeriodSeconds"], (timeout, pod)


def test_all_replicas_run_the_same_training(rendered: tuple[Path, list[dict]]) -> None:
    _, docs = rendered
    job = the_job(docs)
    containers = _containers(job)
    assert len({json.dumps([c["image"], c["command"], c["args"]]) for c in containers}) == 1
    image = containers[0]["image"]
    assert ":" in image and not image.endswith(":latest"), image


def _training_args(job: dict) -> tuple[list[str], list[str]]:
    container = _containers(job)[0]
    assert container["command"] == ["torchrun"]
    args = container["args"]
    i = args.index("-m")
    assert args[i + 1] == "longseq.train"
    return args[: i + 2], args[i + 2 :]


def test_torchrun_accepts_the_arguments(
    rendered: tuple[Path, list[dict]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun's own parser, with the PET_* variables the operator sets on each pod."""
    from torch.distributed.run import get_args_parser

    _, docs = rendered
    job = the_job(docs)
    elastic = job["spec"]["elasticPolicy"]
    pet = {
        "PET_RDZV_ENDPOINT": f"{elastic['rdzvHost']}:{elastic['rdzvPort']}",
        "PET_RDZV_BACKEND": elastic["rdzvBackend"],
        "PET_NNODES": f"{elastic['minReplicas']}:{elastic['maxReplicas']}",
        "PET_MAX_RESTARTS": str(elastic["maxRestarts"]),
        "PET_NPROC_PER_NODE": job["spec"]["nprocPerNode"],
    }
    for key, value in pet.items():
        monkeypatch.setenv(key, value)
    torchrun_args, trainer_args = _training_args(job)
    ns = get_args_parser().parse_args([*torchrun_args[:-2], "-m", "longseq.train", *trainer_args])
    assert ns.module and ns.training_script == "longseq.train"
    assert ns.rdzv_endpoint == pet["PET_RDZV_ENDPOINT"] and ns.rdzv_backend == "c10d"
    assert ns.nnodes == pet["PET_NNODES"] and ns.nproc_per_node == pet["PET_NPROC_PER_NODE"]
    assert ns.max_restarts == elastic["maxRestarts"]
    assert "SIGUSR1" in ns.signals_to_handle


@pytest.mark.skipif(
    importlib.util.find_spec("longseq.train.config") is None,
    reason="longseq.train.config is not there",
)
def test_trainer_accepts_the_overrides(rendered: tuple[Path, list[dict]]) -> None:
    """The overrides compose against longseq's real train config (no typo'd keys)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from longseq.config import CONFIG_DIR
    from longseq.train import config as train_config

    _, docs = rendered
    _, overrides = _training_args(the_job(docs))
    keys = [o.split("=", 1)[0] for o in overrides]
    assert {"experiment", "data.path", "run_dir", "resume"} <= set(keys), overrides
    assert dict(o.split("=", 1) for o in overrides)["resume"] == "auto"
    train_config.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    assert cfg.run_dir.startswith("/shared/") and cfg.data.path.startswith("/shared/")
    GlobalHydra.instance().clear()


def test_overlays_change_the_node_count() -> None:
    base = the_job(render(K8S / "base"))
    for overlay in OVERLAYS:
        job = the_job(render(overlay))
        assert (
            job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"]
            != (base["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"])
        )
        m = re.fullmatch(r"(\d+)-nodes", overlay.name)
        if m:
            nodes = 1 + job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"]
            assert nodes == int(m.group(1)), (overlay.name, nodes)


@pytest.mark.skipif(kustomize_binary() is None, reason="no kubectl/kustomize binary here")
@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_python_renderer_matches_kustomize(target: Path) -> None:
    """Keeps the fallback honest where a real kustomize exists."""
    assert python_kustomize(target) == render(target)


# -- the validators do catch mistakes ------------------------------------------------------------


def test_strict_schema_rejects_an_unknown_pod_field() -> None:
    job = the_job(render(K8S / "base"))
    template = copy.deepcopy(job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"])
    template["spec"]["containers"][0]["resource"] = {"limits": {"cpu": "1"}}  # typo
    with pytest.raises(kv.ValidationError):
        strict_validate(as_pod_template("x", template))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["elasticPolicy"].update(minReplica=2),  # typo
        lambda s: s.update(nprocPerNode=8),  # int where the CRD wants a string
        lambda s: s["runPolicy"].update(cleanPodPolicyy="None"),
    ],
    ids=["typo", "type", "runPolicy-typo"],
)
def test_round_trip_catches_spec_mistakes(mutate) -> None:  # noqa: ANN001
    job = the_job(render(K8S / "base"))
    mutate(job["spec"])
    with pytest.raises(AssertionError):
        assert_round_trip(job)
