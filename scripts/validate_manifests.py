"""Checks behind scripts/validate-manifests.sh (run that script: it provides the Python packages).

Usage: validate_manifests.py KUBE_VERSION   (from the repository root)
"""

import glob
import json
import os
import re
import shlex
import sys

import helm_python as helm
import jsonschema
import kubernetes_validate.utils as kv
import yaml

from kilo_object_checks import (
    KG_FLAGS,
    KG_SUBCOMMANDS,
    KGCTL_FLAGS,
    KGCTL_SUBCOMMANDS,
    NAMESPACE,
    agent_problems,
    find,
    install_cni_problems,
    note,
    webhook_problems,
)

KUBE_VERSION = sys.argv[1] if len(sys.argv) > 1 else "1.33"

PASSED = 0
FAILED = 0


def report(name, problems):
    """Prints one check's outcome; `problems` is a list of strings (empty = passed)."""
    global PASSED, FAILED
    if problems:
        FAILED += 1
        print(f"FAIL {name}")
        for p in problems:
            print(f"     - {p}")
    else:
        PASSED += 1
        print(f"ok   {name}")


# ---------------------------------------------------------------------------------------------
# Schemas.

CERT_MANAGER_REQUIRED = {
    "Issuer": [("spec",)],
    "Certificate": [("spec", "secretName"), ("spec", "issuerRef", "name"), ("spec", "dnsNames")],
}


def load_crd_peer_schema():
    path = "manifests/crds.yaml"
    if not os.path.exists(path):
        return None
    for doc in yaml.safe_load_all(open(path)):
        if (
            doc
            and doc.get("kind") == "CustomResourceDefinition"
            and doc["metadata"]["name"] == "peers.kilo.squat.ai"
        ):
            for v in doc["spec"]["versions"]:
                if v["name"] == "v1alpha1":
                    return v["schema"]["openAPIV3Schema"]
    return None


# Upstream 3.1's Peer schema, used while manifests/crds.yaml does not exist yet.
BUILTIN_PEER_SCHEMA = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["allowedIPs", "publicKey"],
            "additionalProperties": False,
            "properties": {
                "allowedIPs": {"type": "array", "items": {"type": "string"}},
                "endpoint": {
                    "type": "object",
                    "required": ["dnsOrIP", "port"],
                    "additionalProperties": False,
                    "properties": {
                        "dnsOrIP": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"dns": {"type": "string"}, "ip": {"type": "string"}},
                        },
                        "port": {"type": "integer"},
                    },
                },
                "persistentKeepalive": {"type": "integer"},
                "presharedKey": {"type": "string"},
                "publicKey": {"type": "string"},
            },
        }
    },
}
PEER_SCHEMA = load_crd_peer_schema()


def schema_problems(doc):
    """Validates one object; returns problems."""
    api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if api == "cert-manager.io/v1" and kind in CERT_MANAGER_REQUIRED:
        problems = []
        for path in CERT_MANAGER_REQUIRED[kind]:
            node = doc
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if node in (None, "", []):
                problems.append(f"{kind} lacks {'.'.join(path)}")
        return problems
    if api == "kilo.squat.ai/v1alpha1" and kind == "Peer":
        schema = PEER_SCHEMA
        if schema is None:
            note(
                f"Peer {doc.get('metadata', {}).get('name')}: manifests/crds.yaml absent, using upstream 3.1's schema"
            )
            schema = BUILTIN_PEER_SCHEMA
        try:
            jsonschema.validate(doc, schema)
        except jsonschema.ValidationError as e:
            return [f"Peer: {e.message} at {'/'.join(map(str, e.absolute_path))}"]
        return []
    try:
        kv.validate(doc, KUBE_VERSION, strict=True)
    except kv.ValidationError as e:
        return [f"{kind}: {e.message} at {'/'.join(map(str, e.absolute_path))}"]
    except kv.SchemaNotFoundError as e:
        return [e.message]
    return []


def load_docs(path, text=None):
    try:
        docs = list(yaml.safe_load_all(text if text is not None else open(path)))
    except yaml.YAMLError as e:
        report(f"{path}: YAML parses", [str(e)])
        return []
    return [d for d in docs if d]


def validate_docs(label, docs):
    for d in docs:
        name = d.get("metadata", {}).get("name", "?")
        report(
            f"{label}: {d.get('kind')} {name} matches the Kubernetes {KUBE_VERSION} schema",
            schema_problems(d),
        )


# ---------------------------------------------------------------------------------------------
# The plain manifests.


def check_manifests():
    sets = {}
    for path in sorted(glob.glob("manifests/*.yaml")):
        if os.path.basename(path) == "crds.yaml":
            continue
        docs = load_docs(path)
        validate_docs(path, docs)
        sets[path] = docs
    for path, docs in sets.items():
        if find(docs, "DaemonSet", "kilo") is not None:
            report(f"{path}: agent DaemonSet, RBAC and CNI objects are consistent", agent_problems(docs))
            if find(docs, "ConfigMap", "kilo") is not None:
                report(
                    f"{path}: install-cni script installs plugins and the conflist",
                    install_cni_problems(docs),
                )
    pv = sets.get("manifests/peer-validation.yaml", []) + sets.get(
        "manifests/peer-validation-cert-manager.yaml", []
    )
    if pv:
        report(
            "manifests/peer-validation*.yaml: webhook objects are consistent", webhook_problems(pv, "kilo")
        )
    if os.path.exists("manifests/crds.yaml"):
        docs = load_docs("manifests/crds.yaml")
        validate_docs("manifests/crds.yaml", docs)
        crd = find(docs, "CustomResourceDefinition", "peers.kilo.squat.ai")
        problems = []
        if crd is None:
            problems.append("no CustomResourceDefinition peers.kilo.squat.ai")
        else:
            spec = crd["spec"]
            if spec.get("group") != "kilo.squat.ai" or spec.get("scope") != "Cluster":
                problems.append("group must be kilo.squat.ai and scope Cluster")
            if spec.get("names", {}).get("kind") != "Peer" or spec.get("names", {}).get("plural") != "peers":
                problems.append("names must be kind Peer, plural peers")
            if PEER_SCHEMA is None:
                problems.append("no v1alpha1 openAPIV3Schema")
        report("manifests/crds.yaml: the Peer CRD is upstream's (3.1)", problems)
    else:
        note("manifests/crds.yaml is absent (it comes from the k8s work): CRD not validated")
    return sets


# ---------------------------------------------------------------------------------------------
# The Helm chart.

CHART = "charts/kilo"


def render(values):
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name="kilo", namespace=NAMESPACE, is_install=True)
    docs = []
    for name, text in sorted(out.items()):
        if name.endswith(".yaml"):
            docs += load_docs(name, text)
    return docs


def pod_spec(docs):
    return find(docs, "DaemonSet", "kilo")["spec"]["template"]["spec"]


def same_as_manifest(label, docs, manifest_docs):
    """The chart renders what the plain manifest holds (pod spec, RBAC, conflist)."""
    problems = []
    a, b = pod_spec(docs), pod_spec(manifest_docs)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            problems.append(
                f"pod spec {key} differs:\n       chart:    {a.get(key)}\n       manifest: {b.get(key)}"
            )
    for kind in ("ClusterRole",):
        if find(docs, kind, "kilo")["rules"] != find(manifest_docs, kind, "kilo")["rules"]:
            problems.append(f"{kind} rules differ")
    cm_a, cm_b = find(docs, "ConfigMap", "kilo"), find(manifest_docs, "ConfigMap", "kilo")
    if (cm_a is None) != (cm_b is None):
        problems.append("one has ConfigMap kilo, the other not")
    elif cm_a is not None and json.loads(cm_a["data"]["cni-conf.json"]) != json.loads(
        cm_b["data"]["cni-conf.json"]
    ):
        problems.append("conflists differ")
    report(label, problems)


CASES = [
    ("defaults", {}, None),
    ("k3s", {"kubeconfig": {"source": "k3s"}}, "manifests/kilo-k3s.yaml"),
    ("kubeadm", {"kubeconfig": {"source": "configMap"}}, "manifests/kilo-kubeadm.yaml"),
    (
        "k3s flannel",
        {"compatibility": "flannel", "kubeconfig": {"source": "k3s"}},
        "manifests/kilo-k3s-flannel.yaml",
    ),
    (
        "kubeadm flannel",
        {"compatibility": "flannel", "kubeconfig": {"source": "configMap"}},
        "manifests/kilo-kubeadm-flannel.yaml",
    ),
    (
        "userspace",
        {"wireguard": "userspace", "kubeconfig": {"source": "k3s"}},
        "manifests/kilo-k3s-userspace.yaml",
    ),
    (
        "every option",
        {
            "cni": {"enabled": False},
            "meshGranularity": "cross",
            "encapsulate": "crosssubnet",
            "wireguard": "kernel",
            "subnet": "10.6.0.0/16",
            "port": 51821,
            "mtu": 1380,
            "serviceCIDRs": ["10.43.0.0/16", "fd00:43::/112"],
            "extraArgs": ["--iptables-forward-rules", "--log-level=debug"],
            "kubeconfig": {"source": "hostPath"},
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "imagePullSecrets": [{"name": "registry"}],
            "image": {"tag": "0.1.0"},
        },
        None,
    ),
    ("webhook with cert-manager", {"webhook": {"enabled": True}}, None),
    (
        "webhook with a given CA",
        {"webhook": {"enabled": True, "certManager": False, "caBundle": "LS0tLS1CRUdJTg=="}},
        None,
    ),
]

BAD_VALUES = [
    ("an unknown granularity", {"meshGranularity": "everything"}),
    ("an unknown encapsulation", {"encapsulate": "sometimes"}),
    ("cilium compatibility (not offered by the chart)", {"compatibility": "cilium"}),
    ("an unknown WireGuard mode", {"wireguard": "boringtun"}),
    ("a webhook without certificate source", {"webhook": {"enabled": True, "certManager": False}}),
    ("a non-numeric MTU", {"mtu": "big"}),
]


def check_chart(manifest_sets):
    lint = helm.lint(CHART, kube_version=f"v{KUBE_VERSION}.0", strict=True)
    problems = list(lint.get("errors", []))
    for m in lint.get("messages", []):
        if m["severity"] >= 2 or (m["severity"] == 1 and "icon is recommended" not in m["error"]):
            problems.append(f"{m['path']}: {m['error']}")
    report("charts/kilo: helm lint --strict", problems)
    for label, values, manifest in CASES:
        try:
            docs = render(values)
        except helm.HelmError as e:
            report(f"charts/kilo [{label}]: renders", [str(e)])
            continue
        report(f"charts/kilo [{label}]: renders", [])
        validate_docs(f"charts/kilo [{label}]", docs)
        report(
            f"charts/kilo [{label}]: agent DaemonSet, RBAC and CNI objects are consistent",
            agent_problems(docs),
        )
        if find(docs, "ConfigMap", "kilo") is not None:
            report(
                f"charts/kilo [{label}]: install-cni script installs plugins and the conflist",
                install_cni_problems(docs),
            )
        if find(docs, "ValidatingWebhookConfiguration") is not None:
            report(
                f"charts/kilo [{label}]: webhook objects are consistent", webhook_problems(docs, NAMESPACE)
            )
        if manifest and manifest in manifest_sets:
            same_as_manifest(
                f"charts/kilo [{label}] renders what {manifest} holds", docs, manifest_sets[manifest]
            )
    for label, values in BAD_VALUES:
        try:
            render(values)
            report(f"charts/kilo rejects {label}", ["rendered without error"])
        except helm.HelmError:
            report(f"charts/kilo rejects {label}", [])


# ---------------------------------------------------------------------------------------------
# docs/kubernetes.md


# Upstream 2: every node annotation (user-set and agent-written), and kilo-rs's own.
KNOWN_ANNOTATIONS = {
    "endpoint",
    "force-endpoint",
    "internal-ip",
    "force-internal-ip",
    "key",
    "last-seen",
    "leader",
    "location",
    "persistent-keepalive",
    "wireguard-ip",
    "discovered-endpoints",
    "allowed-location-ips",
    "granularity",
    "cni-compatibility-ip",
    # kilo-rs's own, which upstream's agent ignores: the leader-health verdict and a dual-stack
    # node's IPv6 addresses.
    "leader-health",
    "internal-ip6",
    "wireguard-ip6",
}


def fenced_blocks(text):
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def command_problems(line, tool, flags, subcommands):
    problems = []
    try:
        words = shlex.split(line, comments=True)
    except ValueError as e:
        return [f"cannot split {line!r}: {e}"]
    i = 0
    while i < len(words):
        if os.path.basename(words[i]) == tool and (
            i == 0 or words[i - 1] in ("|", "&&", ";", "$(", "sudo", "exec", "--", "then", "do")
        ):
            j, sub = i + 1, None
            while (
                j < len(words)
                and words[j] not in ("|", "&&", ";", ">", "<", "||")
                and not words[j].startswith(">")
            ):
                w = words[j]
                if w.startswith("-"):
                    flag = w.partition("=")[0]
                    if flag not in flags:
                        problems.append(f"`{tool} ... {w}`: {tool} has no flag {flag}")
                elif sub is None and not (
                    j > i + 1 and words[j - 1].startswith("-") and "=" not in words[j - 1]
                ):
                    sub = w
                    if w not in subcommands:
                        problems.append(f"`{tool} {w}`: no such subcommand")
                j += 1
            i = j
        i += 1
    return problems


def check_docs():
    check_doc("docs/kubernetes.md")
    # The operator docs: their kg/kgctl command lines and annotation names.
    for path in ("docs/image.md", "docs/migrating.md", "docs/vms.md"):
        check_doc(path, objects_expected=False)


def check_doc(path, objects_expected=True):
    if not os.path.exists(path):
        report(f"{path} exists", ["missing"])
        return
    text = open(path).read()
    cmd_problems, n_cmds, n_docs = [], 0, 0
    for lang, body in fenced_blocks(text):
        if lang in ("yaml", "yml"):
            docs = load_docs(path, body)
            for d in docs:
                if isinstance(d, dict) and "apiVersion" in d and "kind" in d:
                    n_docs += 1
                    report(
                        f"{path}: {d['kind']} {d.get('metadata', {}).get('name', '?')} matches its schema",
                        schema_problems(d),
                    )
        elif lang in ("sh", "bash", "console", "shell", ""):
            joined = re.sub(r"\\\n\s*", " ", body)
            for line in joined.splitlines():
                line = re.sub(r"^\$ ", "", line.strip())
                line = line.replace("$(", "$( ")
                for tool, flags, subs in (
                    ("kgctl", KGCTL_FLAGS, KGCTL_SUBCOMMANDS),
                    ("kg", KG_FLAGS, KG_SUBCOMMANDS),
                ):
                    if re.search(rf"(^|[\s|;(]){tool}\s", line):
                        n_cmds += 1
                        cmd_problems += command_problems(line, tool, flags, subs)
    report(f"{path}: {n_cmds} kg/kgctl command lines use only flags and subcommands that exist", cmd_problems)
    unknown = sorted(
        {a for a in re.findall(r"kilo\.squat\.ai/([a-z0-9-]+)", text) if not re.fullmatch(r"v\d\w*", a)}
        - KNOWN_ANNOTATIONS
    )
    report(
        f"{path}: every kilo.squat.ai/ annotation named exists (upstream 2)",
        [f"unknown annotation kilo.squat.ai/{a}" for a in unknown],
    )
    if n_docs == 0 and objects_expected:
        report(f"{path}: has Kubernetes objects to validate", ["none found"])


def check_dockerfile():
    """The image provides what the manifests run."""
    # Instructions only: a package named in a comment is not installed.
    text = "\n".join(line for line in open("Dockerfile") if not line.lstrip().startswith("#"))
    problems = []
    stages = re.split(r"^FROM ", text, flags=re.M)
    runtime = stages[-1]
    if "cargo build --release --locked -p kg -p kgctl" not in text:
        problems.append("the builder does not run cargo build --release --locked -p kg -p kgctl")
    for pkg in ("containernetworking-plugins", "iptables", "nftables", "iproute2", "ca-certificates"):
        if not re.search(rf"\b{pkg}\b", runtime):
            problems.append(f"the runtime stage does not install {pkg}")
    if 'ENTRYPOINT ["/opt/bin/kg"]' not in runtime:
        problems.append("the entry point is not /opt/bin/kg (the webhook's args start with `webhook`)")
    if not re.search(r"COPY --from=builder .*kg.*kgctl.* /opt/bin/", runtime):
        problems.append("kg and kgctl are not copied to /opt/bin")
    report(
        "Dockerfile: builds kg and kgctl and ships the CNI plugins, firewall tools and kg as entry point",
        problems,
    )
    ignore = open(".dockerignore").read().split()
    report(
        ".dockerignore: leaves out target/ and fuzz/target/",
        [p for p in ("target/", "fuzz/target/") if p not in ignore],
    )


def main():
    print(
        f"validating against Kubernetes {KUBE_VERSION} (kubernetes-validate, strict) and Helm {helm.helm_sdk_version()}"
    )
    sets = check_manifests()
    check_chart(sets)
    check_docs()
    check_dockerfile()
    print(f"{PASSED} passed, {FAILED} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
