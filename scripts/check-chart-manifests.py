"""Checks one `helm template` output of the ociregistry chart (run by scripts/check-chart).

usage: check-chart-manifests.py RENDERED.yaml K8S_OUT.yaml BINARY WORKDIR

- Writes the documents of Kubernetes' own kinds to K8S_OUT.yaml, for kubernetes-validate.
- Checks the ServiceMonitor (the Prometheus operator's kind, outside the Kubernetes schema) against
  the fields of its CRD that the chart renders, with their types and the CRD's duration pattern.
- Cross-checks the objects: Service selectors match the pod labels, target ports name container
  ports, the ServiceMonitor selects the metrics Service and names its port, probes name ports,
  volume mounts name volumes, the ConfigMap and Secret the pod mounts are rendered (or named).
- Checks the ociregistry container's args against BINARY: each flag is one `ociregistry serve
  --help` lists, flags with a value get one, the only word is `serve`; the binary then parses the
  args itself (with --help appended, so it starts nothing).
- Writes the ConfigMap's config file to WORKDIR and has BINARY load it (`list` on an empty image
  path): unknown keys and wrongly typed values fail there, as they would stop the server.
- Starts BINARY on loopback with the pod's args and the config file (ports moved to free ones, an
  empty image path): the registry port answers /v2/, the metrics port /metrics, and each probe's
  path 200 (plain HTTP on the health port); a probe without that answer fails the check. With
  serverTlsConfig the files come from the Secret the pod mounts, as the kubelet would put them:
  the rendered one, or (a Secret named, not rendered) the directory in $CHECK_CHART_TLS_DIR;
  the registry port is then asked over HTTPS, the server verified against ca.crt of
  $CHECK_CHART_TLS_DIR and, for clientAuth verify, presenting its client.crt.
"""

import base64
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import jsonschema
import yaml

rendered, k8s_out, binary, workdir = sys.argv[1:5]
errors = []


def error(msg):
    errors.append(msg)


docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)

# 1. Kubernetes' own kinds go to kubernetes-validate; the one other kind is checked here.
OWN_CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
with open(k8s_out, "w") as f:
    yaml.safe_dump_all([d for d in docs if (d["apiVersion"], d["kind"]) not in OWN_CRD_KINDS], f)

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}, "labels": LABELS},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": LABELS},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "honorLabels": {"type": "boolean"},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        },
                    },
                },
            },
        },
    },
}
for sm in by_kind.get("ServiceMonitor", []):
    for e in jsonschema.Draft7Validator(SERVICE_MONITOR).iter_errors(sm):
        error(f"ServiceMonitor {sm['metadata'].get('name')}: {'/'.join(map(str, e.path))}: {e.message}")

# 2. The objects agree with each other.
workloads = by_kind.get("Deployment", []) + by_kind.get("DaemonSet", [])
if len(workloads) != 1:
    error(f"expected one Deployment or DaemonSet, rendered {len(workloads)}")
    workloads = workloads[:1]
pod = None
for w in workloads:
    tmpl = w["spec"]["template"]
    pod = tmpl["spec"]
    pod_labels = tmpl["metadata"].get("labels", {})
    sel = w["spec"]["selector"]["matchLabels"]
    if any(pod_labels.get(k) != v for k, v in sel.items()):
        error(f"{w['kind']} selector {sel} does not match its pod labels {pod_labels}")
    containers = {c["name"]: c for c in pod["containers"]}
    ports = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"] + pod.get("initContainers", []):
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                error(f"container {c['name']} mounts volume {m['name']}, which the pod does not have")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in ports:
                error(f"container {c['name']} {probe} names port {port}, which no container has")
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in {m["metadata"]["name"] for m in by_kind.get("ConfigMap", [])}:
            error(f"volume {v['name']} mounts ConfigMap {v['configMap']['name']}, which is not rendered")
    for svc in by_kind.get("Service", []):
        if any(pod_labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
            error(f"Service {svc['metadata']['name']} selects {svc['spec']['selector']}, not the pods")
        for p in svc["spec"]["ports"]:
            if isinstance(p["targetPort"], str) and p["targetPort"] not in ports:
                error(f"Service {svc['metadata']['name']} targets port {p['targetPort']}, which no container has")
            elif isinstance(p["targetPort"], str) and ports[p["targetPort"]] != p["port"]:
                error(f"Service {svc['metadata']['name']} port {p['port']} differs from container port {p['targetPort']}")
for sm in by_kind.get("ServiceMonitor", []):
    sel = sm["spec"]["selector"]["matchLabels"]
    chosen = [s for s in by_kind.get("Service", []) if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
    if len(chosen) != 1:
        error(f"ServiceMonitor selects {len(chosen)} rendered Services, not the one metrics Service")
    for ep in sm["spec"]["endpoints"]:
        if not any(p.get("name") == ep["port"] for s in chosen for p in s["spec"]["ports"]):
            error(f"ServiceMonitor endpoint port {ep['port']} is no port of the Service it selects")

# 3. The args name only what the binary accepts.
help_text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
takes_value = {}
for line in help_text.splitlines():
    m = re.match(r"^\s+(?:-[A-Za-z], )?--([a-z0-9][a-z0-9-]*)( <[^>]+>)?", line)
    if m:
        takes_value[m.group(1)] = bool(m.group(2))
if "port" not in takes_value or "config-file" not in takes_value:
    error(f"could not read the flags from `{binary} serve --help`:\n{help_text}")
config_path = None
image_path = None
mounts = None
main_container = None
pod_args = None
if pod is not None:
    main = [c for c in pod["containers"] if c["name"] == "ociregistry"]
    if len(main) != 1:
        error("no container named ociregistry")
    else:
        c = main[0]
        if "command" in c:
            error("the ociregistry container overrides the image's ENTRYPOINT (the binary) with command")
        # The image's ENTRYPOINT (the repository's Containerfile, when there is one) puts its own
        # flags before the pod's args: check them together, as the binary sees them.
        entrypoint = []
        try:
            for line in open("Containerfile"):
                if line.startswith("ENTRYPOINT ["):
                    entrypoint = [str(a) for a in json.loads(line[len("ENTRYPOINT "):])[1:]]
        except FileNotFoundError:
            pass
        args = entrypoint + [str(a) for a in c.get("args", [])]
        main_container, pod_args = c, args
        words = []
        i = 0
        while i < len(args):
            a = args[i]
            if a.startswith("--"):
                name, eq, _ = a[2:].partition("=")
                if name not in takes_value:
                    error(f"the pod passes {a!r}, which `ociregistry serve --help` does not list")
                elif takes_value[name] and not eq:
                    if i + 1 >= len(args):
                        error(f"the pod passes {a!r} without its value")
                    elif name == "config-file":
                        config_path = args[i + 1]
                    i += 1
            else:
                words.append(a)
            i += 1
        image_path = None
        for i, a in enumerate(args):
            if a == "--image-path" and i + 1 < len(args):
                image_path = args[i + 1]
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if words != ["serve"]:
            error(f"the pod's args hold the words {words}, not just the subcommand 'serve'")
        parsed = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, timeout=30)
        if parsed.returncode != 0:
            error(f"`ociregistry {' '.join(args)}` is refused by the binary: {parsed.stderr.strip()}")

# 4. The config file loads in the binary.
cms = [m for m in by_kind.get("ConfigMap", []) if "registry-config.yaml" in m.get("data", {})]
if config_path is not None:
    if len(cms) != 1:
        error(f"--config-file {config_path} is passed but {len(cms)} ConfigMaps carry registry-config.yaml")
    else:
        cfg_file = f"{workdir}/registry-config.yaml"
        with open(cfg_file, "w") as f:
            f.write(cms[0]["data"]["registry-config.yaml"])
        os.makedirs(f"{workdir}/images/blobs", exist_ok=True)
        loaded = subprocess.run(
            [binary, "--config-file", cfg_file, "--image-path", f"{workdir}/images", "list"],
            capture_output=True, text=True, timeout=60,
        )
        if loaded.returncode != 0:
            error(f"the rendered config file does not load in the binary: {loaded.stderr.strip()}")
elif cms:
    error("a config file is rendered but the pod passes no --config-file")

# 5. The cache is on the images volume: the path the flag, else the config file, else the default names.
if mounts is not None:
    if image_path is None and config_path is not None and len(cms) == 1:
        image_path = (yaml.safe_load(cms[0]["data"]["registry-config.yaml"]) or {}).get("imagePath")
    image_path = image_path or "/var/lib/ociregistry"
    if mounts.get(image_path) != "images":
        error(f"the image path {image_path} is not where the images volume is mounted: {mounts}")


# 6. The pod as the kubelet would run it, on loopback: the binary starts with the rendered args and
# config file (ports moved to free ones, the image path to an empty directory), the registry port
# answers /v2/, the metrics port /metrics, and every probe's path answers 200 on its port once the
# server is ready. With serverTlsConfig, the registry port is asked over HTTPS.
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, timeout=2, tls=None):
    scheme = "https" if tls else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}{path}", timeout=timeout, context=tls) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


cfg_text = cms[0]["data"]["registry-config.yaml"] if config_path is not None and len(cms) == 1 else None
cfg = (yaml.safe_load(cfg_text) or {}) if cfg_text is not None else {}
def tls_files():
    """The Secret volume's files by mount path, as the kubelet would mount them."""
    tls_dir = os.environ.get("CHECK_CHART_TLS_DIR")
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    rendered_secrets = {d["metadata"]["name"]: d for d in by_kind.get("Secret", [])}
    files = {}
    for m in main_container.get("volumeMounts", []):
        secret = vols.get(m["name"], {}).get("secret")
        if secret is None:
            continue
        name = secret["secretName"]
        if name in rendered_secrets:
            data = {k: base64.b64decode(v) for k, v in rendered_secrets[name].get("data", {}).items()}
            data.update({k: v.encode() for k, v in rendered_secrets[name].get("stringData", {}).items()})
        elif tls_dir:
            data = {f: open(os.path.join(tls_dir, f), "rb").read() for f in ("tls.crt", "tls.key", "ca.crt")}
        else:
            error(f"the pod mounts Secret {name}, which is not rendered, and CHECK_CHART_TLS_DIR is not set")
            continue
        for key, value in data.items():
            files[f"{m['mountPath'].rstrip('/')}/{key}"] = value
    return files


def client_tls(tls_cfg):
    tls_dir = os.environ.get("CHECK_CHART_TLS_DIR")
    if not tls_dir:
        error("serverTlsConfig is rendered but CHECK_CHART_TLS_DIR (the CA and a client pair) is not set")
        return None
    ctx = ssl.create_default_context(cafile=f"{tls_dir}/ca.crt")
    if tls_cfg.get("clientAuth") == "verify":
        ctx.load_cert_chain(f"{tls_dir}/client.crt", f"{tls_dir}/client.key")
    return ctx


tls = None
if main_container is not None and not errors and "serverTlsConfig" in cfg:
    tls_cfg = cfg["serverTlsConfig"]
    mounted = tls_files()
    os.makedirs(f"{workdir}/run-tls", exist_ok=True)
    for key in ("cert", "key", "ca"):
        if key not in tls_cfg:
            continue
        if tls_cfg[key] not in mounted:
            error(f"serverTlsConfig.{key} is {tls_cfg[key]}, which no mounted Secret holds ({sorted(mounted)})")
            continue
        local = f"{workdir}/run-tls/{os.path.basename(tls_cfg[key])}"
        with open(local, "wb") as f:
            f.write(mounted[tls_cfg[key]])
        tls_cfg[key] = local
    tls = client_tls(tls_cfg)

if main_container is not None and not errors:
    ports = {p["name"]: p["containerPort"] for p in main_container.get("ports", [])}
    moved = {n: free_port() for n in ports}
    run_args = []
    for i, a in enumerate(pod_args):
        prev = pod_args[i - 1] if i else None
        if prev == "--image-path":
            a = f"{workdir}/run-images"
        elif prev in ("--health", "--metrics", "--port"):
            a = str(moved[{v: k for k, v in ports.items()}[int(a)]])
        elif prev == "--config-file":
            a = f"{workdir}/run-config.yaml"
        run_args.append(a)
    if "--image-path" not in run_args:
        run_args = ["--image-path", f"{workdir}/run-images"] + run_args
    run_args += ["--host", "127.0.0.1", "--port", str(moved["http"])]
    for key in ("health", "metrics"):
        if cfg.get(key):
            cfg[key] = moved[key]
    with open(f"{workdir}/run-config.yaml", "w") as f:
        yaml.safe_dump(cfg, f)
    os.makedirs(f"{workdir}/run-images", exist_ok=True)
    env = dict(os.environ)
    for e in main_container.get("env", []):
        env[e["name"]] = e.get("value", "check-chart")
    log = open(f"{workdir}/serve.log", "w")
    proc = subprocess.Popen([binary, *run_args], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while get(moved["http"], "/v2/", tls=tls) != 200 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if get(moved["http"], "/v2/", tls=tls) != 200:
            over = "over HTTPS " if tls else ""
            error(f"`ociregistry {' '.join(run_args)}` did not answer /v2/ {over}on the registry port; its log:\n"
                  + open(f"{workdir}/serve.log").read()[-3000:])
        else:
            answered = ["/v2/ over HTTPS (CA and hostname verified)" if tls else "/v2/"]
            if "metrics" in moved:
                if get(moved["metrics"], "/metrics") != 200:
                    error("the metrics port does not answer /metrics")
                answered.append("/metrics")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe not in main_container:
                    continue
                if "health" not in takes_value:
                    error(f"the pod has a {probe} but `ociregistry serve --help` lists no --health to answer it")
                    break
                hg = main_container[probe]["httpGet"]
                port = moved[hg["port"]] if isinstance(hg["port"], str) else hg["port"]
                probe_tls = tls if hg.get("scheme", "HTTP") == "HTTPS" else None
                while True:
                    status = get(port, hg["path"], tls=probe_tls)
                    # Only a server still starting (no answer yet, or 503 not ready) may change its answer.
                    if status not in (None, 503) or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                if status != 200:
                    error(f"{probe} GET {hg['path']} on port {hg['port']} answers {status}, not 200")
                answered.append(f"{probe} {hg['path']}")
            if not errors:
                print(f"started on loopback; answered 200: {', '.join(answered)}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

for e in errors:
    print(f"  {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
