"""Runs every manifests/kilo-*.yaml DaemonSet's containers from the image's unpacked root file system,
the way a kubelet would (scripts/test-image.sh calls this; run as root):

- the init containers' scripts (install-cni, generate-kubeconfig) with their environment (ConfigMap
  keys, field references) and volumes (scratch directories standing in for the host paths);
- the agent with the manifest's args, in a network namespace of its own, against a fake API server
  on the address the manifest's kubeconfig names (https://127.0.0.1:6444 for the k3s manifests, which
  take it from the k3s agent's kubelet.kubeconfig; the kubeadm manifests read kube-proxy's kubeconfig).
  The agent must parse every flag, load the kubeconfig, create its WireGuard device and list Nodes
  with the pod's ServiceAccount token.

Usage: test_image_manifests.py ROOTFS WORKDIR NETNS_PREFIX
Prints "ok: ..." / "FAILED: ..." lines and exits non-zero on any failure.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import yaml

ROOTFS, WORK, PREFIX = sys.argv[1:4]
TOKEN = "kilo-image-test-token"
NODE_IP = "192.168.78.1"
FAILED = 0

FAKE_API = r"""
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 6444)); srv.listen(16)
log = open(sys.argv[3], "a", buffering=1)
while True:
    conn, _ = srv.accept()
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = tls.recv(4096)
            if not chunk:
                break
            head += chunk
        lines = head.decode(errors="replace").split("\r\n")
        auth = [l for l in lines if l.lower().startswith("authorization:")]
        log.write(lines[0] + " | " + (auth[0] if auth else "no authorization") + "\n")
        tls.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        tls.close()
    except Exception as e:
        log.write("error: %s\n" % e)
        conn.close()
"""


def report(ok, what, detail=""):
    global FAILED
    if ok:
        print(f"ok: {what}")
    else:
        FAILED += 1
        print(f"FAILED: {what}" + (f"\n{detail}" if detail else ""))


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def pki(d):
    """A CA and a server certificate for 127.0.0.1 signed by it (what k3s's server-ca.crt signs)."""
    os.makedirs(d)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("openssl", "req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt", "-subj",
       "/CN=kilo-image-test-ca", "-days", "1", "-addext", "basicConstraints=critical,CA:TRUE",
       "-addext", "keyUsage=critical,keyCertSign")
    sh("openssl", "req", *ec, "-keyout", f"{d}/srv.key", "-out", f"{d}/srv.csr", "-subj", "/CN=127.0.0.1")
    with open(f"{d}/ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    sh("openssl", "x509", "-req", "-in", f"{d}/srv.csr", "-CA", f"{d}/ca.crt", "-CAkey", f"{d}/ca.key",
       "-CAcreateserial", "-out", f"{d}/srv.crt", "-days", "1", "-extfile", f"{d}/ext")


def inside(path):
    """The host path of `path` in the image, following the image's symlinks inside the image (its
    /var/run is an absolute link to /run: followed on the host it would lead out of the image)."""
    parts = [p for p in path.split("/") if p]
    resolved = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved[:-1]
            continue
        candidate = os.path.join(ROOTFS, *resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise SystemExit(f"symlink loop at {path}")
            link = os.readlink(candidate)
            if link.startswith("/"):
                resolved = []
            parts = [p for p in link.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return os.path.join(ROOTFS, *resolved)


def in_root(netns, argv, env, binds, **kw):
    """argv inside the image (chroot) with private /proc, /sys, /dev, /run, /tmp and the given bind
    mounts (host path -> path in the image), in network namespace netns (None: this one)."""
    script = [
        'r=$1; shift',
        'mount -t proc proc "$r/proc"',
        'mount -t sysfs sysfs "$r/sys"',
        'mount --rbind /dev "$r/dev"',
        'mount -t tmpfs tmpfs "$r/run"',
        'mount -t tmpfs tmpfs "$r/tmp"',
    ]
    for src, dst in binds:
        target = f'"{inside(dst)}"'
        make = f"mkdir -p {target}" if os.path.isdir(src) else f'mkdir -p "$(dirname {target})" && touch {target}'
        script += [make, f'mount --bind "{src}" {target}']
    envs = [f"{k}={v}" for k, v in env.items()]
    script.append('exec chroot "$r" /usr/bin/env -i "$@"')
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-ec", "\n".join(script), "sh", ROOTFS,
           "PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *envs, *argv]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.Popen(cmd, **kw)


def expand(value, env):
    """Kubernetes' $(VAR) expansion in args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def container_env(c, docs):
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        src = e["valueFrom"]
        if "fieldRef" in src:
            env[e["name"]] = {"spec.nodeName": "node-1", "status.hostIP": NODE_IP,
                              "metadata.namespace": "kube-system"}[src["fieldRef"]["fieldPath"]]
        elif "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref["name"])
            env[e["name"]] = cm["data"][ref["key"]]
    return env


def main():
    pki(f"{WORK}/pki")
    for path in sorted(p for p in os.listdir("manifests") if re.match(r"kilo-.*\.yaml$", p)):
        docs = [d for d in yaml.safe_load_all(open(f"manifests/{path}")) if d]
        ds = next(d for d in docs if d["kind"] == "DaemonSet")
        pod = ds["spec"]["template"]["spec"]
        run_pod(path, docs, pod)
    run_upstream_k3s_kubeconfig()
    run_upstream_userspace_sidecar()


def run_pod(path, docs, pod):
    name = path.removesuffix(".yaml")
    base = f"{WORK}/{name}"
    host = f"{base}/host"  # the node's file system, as far as the pod sees it
    for d in ("opt/cni/bin", "etc/cni/net.d", "var/lib/kilo", "lib/modules", "run/wireguard",
              "var/lib/rancher/k3s/agent"):
        os.makedirs(f"{host}/{d}")
    open(f"{host}/run/xtables.lock", "w").close()
    open(f"{host}/etc/cni/net.d/10-flannel.conflist", "w").write("{}\n")
    # The k3s agent's files that the generate-kubeconfig init container reads.
    k3s = f"{host}/var/lib/rancher/k3s/agent"
    shutil.copy(f"{WORK}/pki/ca.crt", f"{k3s}/server-ca.crt")
    open(f"{k3s}/kubelet.kubeconfig", "w").write(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority: /var/lib/rancher/k3s/agent/server-ca.crt\n"
        "    server: https://127.0.0.1:6444\n  name: local\nkind: Config\n")
    # The pod's ServiceAccount token (the kubelet mounts it into every container).
    sa = f"{base}/serviceaccount"
    os.makedirs(sa)
    open(f"{sa}/token", "w").write(TOKEN)
    shutil.copy(f"{WORK}/pki/ca.crt", f"{sa}/ca.crt")
    # kube-proxy's kubeconfig ConfigMap (kubeadm): the API server's address, the pod's own token.
    kube_proxy = f"{base}/kube-proxy"
    os.makedirs(kube_proxy)
    open(f"{kube_proxy}/kubeconfig", "w").write(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n"
        "    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n"
        "    server: https://127.0.0.1:6444\n  name: default\ncontexts:\n- context:\n    cluster: default\n"
        "    namespace: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n"
        "- name: default\n  user:\n    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n")

    volumes = {}
    for v in pod.get("volumes", []):
        if "hostPath" in v:
            volumes[v["name"]] = host + v["hostPath"]["path"]
        elif "emptyDir" in v:
            volumes[v["name"]] = f"{base}/emptydir-{v['name']}"
            os.makedirs(volumes[v["name"]])
        elif "configMap" in v and v["configMap"]["name"] == "kube-proxy":
            volumes[v["name"]] = kube_proxy
        else:
            raise SystemExit(f"{path}: volume {v['name']} of an unknown kind")

    def binds(c):
        out = [(sa, "/var/run/secrets/kubernetes.io/serviceaccount")]
        for m in c.get("volumeMounts", []):
            src = volumes[m["name"]]
            if m["mountPath"] == "/dev/net/tun":
                continue  # /dev is the host's already
            out.append((src, m["mountPath"]))
        return out

    for c in pod.get("initContainers", []):
        env = container_env(c, docs)
        argv = [expand(a, env) for a in c.get("command", []) + c.get("args", [])]
        p = in_root(None, argv, env, binds(c), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = p.communicate(timeout=60)
        report(p.returncode == 0, f"{path}: init container {c['name']} runs from the image", out)
        if c["name"] == "install-cni":
            installed = sorted(os.listdir(f"{host}/opt/cni/bin"))
            confs = sorted(os.listdir(f"{host}/etc/cni/net.d"))
            report(installed == ["bridge", "host-local", "loopback", "portmap"] and confs == ["10-kilo.conflist"],
                   f"{path}: install-cni put the image's CNI plugins and only Kilo's conflist on the host",
                   f"plugins {installed}, conflists {confs}")
        if c["name"] == "generate-kubeconfig":
            kc = yaml.safe_load(open(f"{volumes['kubeconfig']}/kubeconfig"))
            report(kc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6444",
                   f"{path}: generate-kubeconfig took the k3s agent's API server address")

    (kilo,) = [c for c in pod["containers"] if c["name"] == "kilo"]
    env = container_env(kilo, docs)
    argv = ["/opt/bin/kg"] + [expand(a, env) for a in kilo.get("args", [])]
    run_agent(path, base, argv, {}, binds(kilo))


def run_agent(label, base, argv, env, binds, before=None):
    """kg in a network namespace of its own, against the fake API server on 127.0.0.1:6444: it
    must stay up, list Nodes and authenticate with the ServiceAccount token."""
    ns = f"{PREFIX}{len(os.listdir(WORK))}"
    sh("ip", "netns", "add", ns)
    try:
        # A node: an address (the node IP the flannel manifests restrict detection to) and a default
        # route into a veth pair that ends in the same namespace: nothing leaves it.
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        sh("ip", "-n", ns, "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "eth1", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", "192.168.78.254")
        requests = f"{base}/api-requests.log"
        open(requests, "w").close()
        api = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", FAKE_API, f"{WORK}/pki/srv.crt",
                                f"{WORK}/pki/srv.key", requests])
        helper = before(ns) if before else None
        log = open(f"{base}/kg.log", "w")
        kg = in_root(ns, argv, env, binds, stdout=log, stderr=subprocess.STDOUT)
        seen = ""
        for _ in range(150):
            seen = open(requests).read()
            if "/api/v1/nodes" in seen or kg.poll() is not None:
                break
            time.sleep(0.2)
        alive = kg.poll() is None
        kg.send_signal(signal.SIGTERM)
        try:
            kg.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kg.kill()
            kg.wait()
        api.kill()
        api.wait()
        if helper:
            helper.terminate()
            helper.wait()
        log.close()
        detail = f"args {argv}\nAPI requests:\n{seen}\nkg log (tail):\n" + "".join(open(f"{base}/kg.log").readlines()[-15:])
        nodes = [l for l in seen.splitlines() if "/api/v1/nodes" in l]
        report(alive and bool(nodes), f"{label}: kg runs with the manifest's args and lists Nodes through its kubeconfig", detail)
        report(bool(nodes) and all(f"Bearer {TOKEN}" in l for l in nodes),
               f"{label}: kg authenticates with the pod's ServiceAccount token", detail)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def run_upstream_userspace_sidecar():
    """Upstream's userspace manifests: a sidecar (boringtun, wireguard-go) creates kilo0 and serves
    its UAPI socket in the host's /var/run/wireguard, shared with the agent, which runs with
    --create-interface=false --interface=kilo0. The sidecar here is the repository's standalone
    userspace daemon (WG_USERSPACE); kg from the image must attach to it."""
    sidecar = os.environ.get("WG_USERSPACE")
    if not sidecar:
        report(False, "upstream's userspace sidecar: WG_USERSPACE names the userspace daemon")
        return
    base = f"{WORK}/upstream-userspace"
    sockets = f"{base}/var-run-wireguard"
    for d in (sockets, f"{base}/kilo", f"{base}/kube-proxy"):
        os.makedirs(d)
    shutil.copy(f"{WORK}/kilo-kubeadm/kube-proxy/kubeconfig", f"{base}/kube-proxy/kubeconfig")
    sa = f"{WORK}/kilo-kubeadm/serviceaccount"
    argv = ["/opt/bin/kg", "--kubeconfig=/etc/kubernetes/kubeconfig", "--hostname=node-1",
            "--create-interface=false", "--interface=kilo0"]
    binds = [(sa, "/var/run/secrets/kubernetes.io/serviceaccount"), (f"{base}/kube-proxy", "/etc/kubernetes"),
             (f"{base}/kilo", "/var/lib/kilo"), (sockets, "/var/run/wireguard")]

    def start_sidecar(ns):
        p = subprocess.Popen(["ip", "netns", "exec", ns, sidecar, "kilo0", sockets],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        report(p.stdout.readline().strip() == "ready", "upstream's userspace sidecar: the sidecar serves kilo0")
        return p

    run_agent("upstream's userspace manifest (sidecar)", base, argv, {}, binds, before=start_sidecar)
    log = open(f"{base}/kg.log").read()
    ready = [l for l in log.splitlines() if "WireGuard device ready" in l]
    report(bool(ready) and all("Userspace" in l for l in ready),
           "upstream's userspace manifest (sidecar): kg attached to the sidecar's kilo0 through /var/run/wireguard",
           log[-2000:])


def run_upstream_k3s_kubeconfig():
    """Upstream's k3s manifests write the agent's kubeconfig with a shell script whose output has
    an unnamed cluster entry and a context naming cluster "kilo": client-go finds no cluster, treats
    the file as empty and falls back to the in-cluster configuration. kg must do the same (it used
    to refuse the file: "missing field `name`")."""
    base = f"{WORK}/upstream-k3s-kubeconfig"
    kubeconfig = f"{base}/kubernetes"
    for d in (kubeconfig, f"{base}/kilo", f"{base}/serviceaccount"):
        os.makedirs(d)
    # The same shape as that script's output (indented, no cluster name, inline token).
    open(f"{kubeconfig}/kubeconfig", "w").write(
        "    apiVersion: v1\n    kind: Config\n    name: kilo\n    clusters:\n    - cluster:\n"
        "        server: https://127.0.0.1:6444\n"
        "        certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n"
        f"    users:\n    - name: kilo\n      user:\n        token: {TOKEN}\n"
        "    contexts:\n    - name: kilo\n      context:\n        cluster: kilo\n"
        "        namespace: kube-system\n        user: kilo\n    current-context: kilo\n")
    sa = f"{base}/serviceaccount"
    open(f"{sa}/token", "w").write(TOKEN)
    open(f"{sa}/namespace", "w").write("kube-system")
    shutil.copy(f"{WORK}/pki/ca.crt", f"{sa}/ca.crt")
    argv = ["/opt/bin/kg", "--kubeconfig=/etc/kubernetes/kubeconfig", "--hostname=node-1", "--cni=false",
            "--compatibility=flannel", "--local=false", f"--internal-cidr={NODE_IP}/32"]
    # The kubelet's in-cluster environment: the `kubernetes` Service (here the fake API server).
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6444"}
    binds = [(sa, "/var/run/secrets/kubernetes.io/serviceaccount"), (kubeconfig, "/etc/kubernetes"),
             (f"{base}/kilo", "/var/lib/kilo")]
    run_agent("upstream's k3s kubeconfig script's output", base, argv, env, binds)


if __name__ == "__main__":
    main()
    sys.exit(1 if FAILED else 0)
