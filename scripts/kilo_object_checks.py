"""Checks of the objects themselves, for scripts/validate_manifests.py: flags that kg really has,
the agent DaemonSet and what it depends on, the webhook objects, and the install-cni script."""

import json
import os
import re
import subprocess
import tempfile

NAMESPACE = "kube-system"

NOTED = set()


def note(msg):
    if msg not in NOTED:
        NOTED.add(msg)
        print(f"note {msg}")


# ---------------------------------------------------------------------------------------------
# Flags, read from the clap definitions.


def cli_spec(path):
    """Long/short flags, bool flags and subcommands declared in a clap cli.rs."""
    text = open(path).read()
    flags, bools = {"--help", "-h", "--version", "-V"}, set()
    for m in re.finditer(r"#\[arg\((.*?)\)\]\s*\n\s*(?:pub )?(\w+):\s*([\w<>]+)", text):
        attrs, field, ty = m.groups()
        long_name = re.search(r'long\s*=\s*"([^"]+)"', attrs)
        if re.search(r"\blong\b", attrs):
            flag = "--" + (long_name.group(1) if long_name else field.replace("_", "-"))
            flags.add(flag)
            if ty == "bool":
                bools.add(flag)
        if re.search(r"\bshort\b", attrs):
            flags.add("-" + field[0])
    subcommands = set()
    block = re.search(r"pub enum Command \{(.*?)\n\}", text, re.S)
    if block:
        for v in re.finditer(r"^    ([A-Z]\w*)", block.group(1), re.M):
            subcommands.add(re.sub(r"(?<!^)([A-Z])", r"-\1", v.group(1)).lower())
    return flags, bools, subcommands


KG_FLAGS, KG_BOOLS, KG_SUBCOMMANDS = cli_spec("bins/kg/src/cli.rs")
KGCTL_FLAGS, _, KGCTL_SUBCOMMANDS = cli_spec("bins/kgctl/src/cli.rs")
KG_VALUES = {
    "--mesh-granularity": {"location", "full", "cross"},
    "--encapsulate": {"never", "crosssubnet", "always"},
    "--compatibility": {"flannel", "cilium"},
    "--wireguard": {"kernel", "userspace", "auto"},
}


def kg_arg_problems(args):
    problems = []
    for a in args:
        if not a.startswith("-"):
            continue
        flag, _, value = a.partition("=")
        if flag not in KG_FLAGS:
            problems.append(f"kg has no flag {flag} (bins/kg/src/cli.rs)")
        elif flag in KG_BOOLS and value and value not in ("true", "false"):
            problems.append(f"{a}: a boolean flag takes true or false")
        elif flag in KG_VALUES and value not in KG_VALUES[flag]:
            problems.append(f"{a}: expected one of {sorted(KG_VALUES[flag])}")
    return problems


# ---------------------------------------------------------------------------------------------
# Object-graph checks.

# What kg requests: list/watch Nodes and Peers, patch Nodes (no get, no CRD lookup).
MINIMAL_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "patch", "watch"]},
    {"apiGroups": ["kilo.squat.ai"], "resources": ["peers"], "verbs": ["list", "watch"]},
]

UPSTREAM_CONFLIST = {
    "cniVersion": "0.4.0",
    "name": "kilo",
    "plugins": [
        {
            "name": "kubernetes",
            "type": "bridge",
            "bridge": "kube-bridge",
            "isDefaultGateway": True,
            "forceAddress": True,
            "mtu": 1420,
            "ipam": {"type": "host-local"},
        },
        {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
    ],
}


def find(docs, kind, name=None, namespace=None):
    for d in docs:
        md = d.get("metadata", {})
        if d.get("kind") == kind and (name is None or md.get("name") == name):
            if namespace is None or md.get("namespace") == namespace:
                return d
    return None


def normal_rules(rules):
    return sorted(
        (sorted(r.get("apiGroups", [])), sorted(r.get("resources", [])), sorted(r.get("verbs", [])))
        for r in rules
    )


def pod_reference_problems(pod, docs, namespace):
    """Volumes, mounts, env references and ConfigMap keys of a pod spec resolve."""
    problems = []
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    used = set()
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        for m in c.get("volumeMounts", []):
            used.add(m["name"])
            if m["name"] not in volumes:
                problems.append(f"container {c['name']} mounts undefined volume {m['name']}")
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                cm = find(docs, "ConfigMap", ref["name"], namespace)
                if cm is None or ref["key"] not in cm.get("data", {}):
                    problems.append(
                        f"env {e['name']} refers to ConfigMap {ref['name']} key {ref['key']}, not in this set"
                    )
        names = {e["name"] for e in c.get("env", [])}
        for a in c.get("args", []) + c.get("command", []):
            for var in re.findall(r"\$\((\w+)\)", a):
                if var not in names:
                    problems.append(f"container {c['name']} uses $({var}) without defining it")
    for v in volumes:
        if v not in used:
            problems.append(f"volume {v} is never mounted")
    return problems


def agent_problems(docs):
    """The agent DaemonSet and what it depends on, in one set of documents."""
    ds = find(docs, "DaemonSet", "kilo")
    if ds is None:
        return ["no DaemonSet kilo"]
    problems = []
    ns = ds["metadata"].get("namespace")
    if ns != NAMESPACE:
        problems.append(f"DaemonSet namespace {ns}, expected {NAMESPACE}")
    pod = ds["spec"]["template"]["spec"]
    problems += pod_reference_problems(pod, docs, ns)
    if pod.get("hostNetwork") is not True:
        problems.append("hostNetwork is not true")
    if {"operator": "Exists"} not in pod.get("tolerations", []):
        problems.append("does not tolerate every taint ({operator: Exists})")
    kilo = next((c for c in pod["containers"] if c["name"] == "kilo"), None)
    if kilo is None:
        return problems + ["no container kilo"]
    if kilo.get("securityContext", {}).get("privileged") is not True:
        problems.append("container kilo is not privileged")
    args = kilo.get("args", [])
    env = {e["name"]: e for e in kilo.get("env", [])}
    problems += kg_arg_problems(args)
    if "--hostname=$(NODE_NAME)" not in args:
        problems.append("args lack --hostname=$(NODE_NAME)")
    if env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        problems.append("NODE_NAME does not come from spec.nodeName")
    if {"containerPort": 1107, "name": "metrics"} not in kilo.get("ports", []):
        problems.append("no container port 1107 named metrics")
    # Readiness follows /health (503 while the host is not in the planned state); liveness only
    # asks whether the agent still serves, so a node whose apply keeps failing is not restarted
    # (and cleaned up) over and over.
    for probe, path in (("readinessProbe", "/health"), ("livenessProbe", "/metrics")):
        get = kilo.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("metrics", 1107):
            problems.append(f"{probe} is not GET {path} on port 1107")
    mounts = {m["mountPath"]: m for m in kilo.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for path in ("/var/lib/kilo", "/lib/modules", "/run/xtables.lock"):
        if path not in mounts:
            problems.append(f"container kilo does not mount {path}")
    if not mounts.get("/lib/modules", {}).get("readOnly"):
        problems.append("/lib/modules is not mounted read-only")
    kilo_dir = volumes.get(mounts.get("/var/lib/kilo", {}).get("name"), {})
    if kilo_dir.get("hostPath", {}).get("path") != "/var/lib/kilo":
        problems.append("/var/lib/kilo is not the host's /var/lib/kilo (the key would not persist)")
    if "--kubeconfig=/etc/kubernetes/kubeconfig" in args and not any(
        p in mounts for p in ("/etc/kubernetes", "/etc/kubernetes/kubeconfig")
    ):
        problems.append("--kubeconfig names a file that is not mounted")

    sa = pod.get("serviceAccountName")
    if find(docs, "ServiceAccount", sa, ns) is None:
        problems.append(f"ServiceAccount {ns}/{sa} is not in the set")
    binding = find(docs, "ClusterRoleBinding", "kilo")
    if binding is None or {"kind": "ServiceAccount", "name": sa, "namespace": ns} not in binding.get(
        "subjects", []
    ):
        problems.append("no ClusterRoleBinding kilo binding the ServiceAccount")
    elif binding["roleRef"] != {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "kilo",
    }:
        problems.append("ClusterRoleBinding kilo does not bind ClusterRole kilo")
    role = find(docs, "ClusterRole", "kilo")
    if role is None:
        problems.append("no ClusterRole kilo")
    elif normal_rules(role.get("rules", [])) != normal_rules(MINIMAL_RULES):
        problems.append(f"ClusterRole kilo is not the minimal rule set: {role.get('rules')}")

    cni = "--cni=false" not in args
    flannel = "--compatibility=flannel" in args
    init = {c["name"]: c for c in pod.get("initContainers", [])}
    if cni:
        if "/etc/cni/net.d" not in mounts:
            problems.append("with --cni the agent must mount /etc/cni/net.d")
        if "install-cni" not in init:
            problems.append("with --cni an install-cni init container is needed")
        cm = find(docs, "ConfigMap", "kilo", ns)
        if cm is None or "cni-conf.json" not in cm.get("data", {}):
            problems.append("with --cni ConfigMap kilo with cni-conf.json is needed")
        else:
            try:
                conf = json.loads(cm["data"]["cni-conf.json"])
                if conf != UPSTREAM_CONFLIST:
                    problems.append("cni-conf.json differs from upstream's default conflist")
            except ValueError as e:
                problems.append(f"cni-conf.json is not JSON: {e}")
    elif "install-cni" in init or find(docs, "ConfigMap", "kilo", ns) is not None:
        problems.append("--cni=false but the CNI is still installed")
    if flannel:
        for a in ("--cni=false", "--local=false", "--internal-cidr=$(NODE_IP)/32"):
            if a not in args:
                problems.append(f"flannel compatibility needs {a}")
        if (
            env.get("NODE_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            != "status.hostIP"
        ):
            problems.append("NODE_IP does not come from status.hostIP")
    if "--wireguard=userspace" in args:
        tun = volumes.get(mounts.get("/dev/net/tun", {}).get("name"), {})
        if tun.get("hostPath", {}) != {"path": "/dev/net/tun", "type": "CharDevice"}:
            problems.append("userspace WireGuard needs the host's /dev/net/tun mounted")
        if any(c["name"] != "kilo" for c in pod["containers"]):
            problems.append("userspace WireGuard runs in the agent: no sidecar expected")
    return problems


UPSTREAM_WEBHOOK = {
    "name": "peers.kilo.squat.ai",
    "rules": [
        {
            "apiGroups": ["kilo.squat.ai"],
            "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["peers"],
            "scope": "Cluster",
        }
    ],
    "admissionReviewVersions": ["v1"],
    "sideEffects": "None",
    "timeoutSeconds": 5,
}


def webhook_problems(docs, namespace):
    problems = []
    vwc = find(docs, "ValidatingWebhookConfiguration", "peers.kilo.squat.ai")
    if vwc is None or len(vwc.get("webhooks", [])) != 1:
        return ["no ValidatingWebhookConfiguration peers.kilo.squat.ai with one webhook"]
    hook = vwc["webhooks"][0]
    for key, want in UPSTREAM_WEBHOOK.items():
        if hook.get(key) != want:
            problems.append(f"webhook {key} is {hook.get(key)!r}, upstream has {want!r}")
    svc_ref = hook.get("clientConfig", {}).get("service", {})
    if svc_ref.get("namespace") != namespace or svc_ref.get("name") != "peer-validation":
        problems.append(f"webhook service is not {namespace}/peer-validation")
    if svc_ref.get("path") != "/validate":
        problems.append("webhook path is not /validate")
    svc = find(docs, "Service", svc_ref.get("name"), svc_ref.get("namespace"))
    if svc is None:
        return problems + ["the webhook's Service is not in the set"]
    port = next((p for p in svc["spec"]["ports"] if p["port"] == svc_ref.get("port", 443)), None)
    if port is None:
        problems.append("the Service has no port the webhook calls")
    dep = next(
        (
            d
            for d in docs
            if d.get("kind") == "Deployment"
            and d["metadata"].get("namespace") == namespace
            and svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ),
        None,
    )
    if dep is None:
        return problems + ["no Deployment's pods match the Service selector"]
    pod = dep["spec"]["template"]["spec"]
    problems += pod_reference_problems(pod, docs, namespace)
    c = pod["containers"][0]
    if port is not None and port["targetPort"] not in [p.get("name") for p in c.get("ports", [])] + [
        p["containerPort"] for p in c.get("ports", [])
    ]:
        problems.append("the Service's targetPort is not a container port")
    args = c.get("args", [])
    if args[:1] != ["webhook"]:
        problems.append("the container does not run `kg webhook`")
    want = {"--cert-file", "--key-file", "--listen"}
    given = {a.partition("=")[0] for a in args[1:]}
    if given != want:
        problems.append(f"webhook flags {sorted(given)}, expected {sorted(want)}")
    if "webhook" in KG_SUBCOMMANDS:
        for f in given - KG_FLAGS:
            problems.append(f"kg has no flag {f}")
    else:
        note("bins/kg/src/cli.rs has no `webhook` subcommand yet: webhook flag names not checked against it")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secret = None
    for a in args[1:]:
        flag, _, path = a.partition("=")
        if flag in ("--cert-file", "--key-file"):
            m = mounts.get(os.path.dirname(path))
            if m is None:
                problems.append(f"{flag} {path} is not in a mounted directory")
            else:
                secret = volumes[m["name"]].get("secret", {}).get("secretName")
    cert = find(docs, "Certificate", None, namespace)
    annotation = vwc["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from")
    if cert is not None:
        if cert["spec"]["secretName"] != secret:
            problems.append(f"Certificate writes {cert['spec']['secretName']}, the webhook mounts {secret}")
        if annotation != f"{namespace}/{cert['metadata']['name']}":
            problems.append("inject-ca-from does not name the Certificate")
        if f"peer-validation.{namespace}.svc" not in cert["spec"]["dnsNames"]:
            problems.append("the certificate does not name the Service's DNS name")
        issuer = find(docs, "Issuer", cert["spec"]["issuerRef"]["name"], namespace)
        if issuer is None:
            problems.append("the Certificate's Issuer is not in the set")
    elif "caBundle" not in hook.get("clientConfig", {}) and annotation is None:
        problems.append("no Certificate, no caBundle and no CA injection: the API server cannot trust it")
    return problems


def install_cni_problems(docs):
    """Runs the install-cni init container's script on a scratch directory."""
    ds = find(docs, "DaemonSet", "kilo")
    init = next(c for c in ds["spec"]["template"]["spec"]["initContainers"] if c["name"] == "install-cni")
    env = {e["name"]: e for e in init["env"]}
    ref = env["CNI_NETWORK_CONFIG"]["valueFrom"]["configMapKeyRef"]
    conf = find(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
    script = init["command"][-1]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        plugins, binDir, confDir = f"{tmp}/plugins", f"{tmp}/host/opt/cni/bin", f"{tmp}/host/etc/cni/net.d"
        for d in (plugins, binDir, f"{confDir}/multus.d"):
            os.makedirs(d)
        for p in ("bridge", "host-local", "portmap", "loopback"):
            open(f"{plugins}/{p}", "w").write(f"new {p}\n")
        open(f"{binDir}/bridge", "w").write("old bridge\n")
        open(f"{binDir}/flannel", "w").write("flannel\n")
        for f in ("10-flannel.conflist", "99-loopback.conf"):
            open(f"{confDir}/{f}", "w").write("{}\n")
        # The image's plugins are in /opt/cni/bin (upstream's path); the host's are under /host/.
        script = re.sub(r"(?<!/host)/opt/cni/bin/", plugins + "/", script).replace("/host/", tmp + "/host/")
        run = subprocess.run(
            ["sh", "-c", script],
            env={
                "PATH": os.environ["PATH"],
                "CNI_CONF_NAME": env["CNI_CONF_NAME"]["value"],
                "CNI_NETWORK_CONFIG": conf,
            },
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            return [f"script failed ({run.returncode}): {run.stderr.strip()}"]
        if sorted(os.listdir(confDir)) != ["10-kilo.conflist", "multus.d"]:
            problems.append(
                f"CNI conf dir holds {sorted(os.listdir(confDir))}, expected only 10-kilo.conflist"
            )
        elif json.load(open(f"{confDir}/10-kilo.conflist")) != json.loads(conf):
            problems.append("the installed conflist differs from the ConfigMap")
        if sorted(os.listdir(binDir)) != ["bridge", "flannel", "host-local", "loopback", "portmap"]:
            problems.append(f"CNI bin dir holds {sorted(os.listdir(binDir))}")
        elif open(f"{binDir}/bridge").read() != "new bridge\n":
            problems.append("an existing plugin was not replaced")
    return problems
