#!/usr/bin/env python3
"""Static validation of deploy/ with real Debian tools and the Kubernetes API schema.

usage: check_deploy.py CHECK --source DIR --paliflow BIN      CHECK: yamllint k8s systemd container configs sizing

  yamllint   yamllint -s (strict: warnings fail) on deploy/k8s with deploy/k8s/.yamllint
  k8s        every manifest against the Kubernetes API types of Debian's python3-kubernetes (generated from
             the Kubernetes OpenAPI spec: unknown fields, wrong types and missing required fields fail), then
             semantic checks: selectors match pod labels, Service target ports and probe ports exist, every
             volume's ConfigMap/Secret/PVC and every mounted key exists, requests <= limits, restricted
             security contexts, paliflow flags and config options exist (`paliflow CMD --help`), endpoints
             in the configs name a Service port that reaches the container binding them, keys are mounted.
             (kubectl cannot check offline: `kubectl apply --dry-run=client` still asks a server for the API
             groups, and Debian's kubernetes-client conflicts with the kubectl this machine image carries.)
  systemd    systemd-analyze verify (package systemd) on the units, the binary path pointed at the build;
             any warning fails; hardening settings present; ExecStart flags and config files valid.
  container  deploy/Dockerfile parsed and held to its rules (hadolint is not in Debian; CI builds and runs the
             image with podman: .ci/container-image): Debian bookworm bases (a build argument's default when
             FROM names one; CI passes a base made by mmdebstrap), multi-stage, non-root runtime user,
             exec-form entrypoint, apt hygiene, no downloads, only the binary copied into the runtime stage,
             the build stage installs .ci/packages; deploy/runtime-packages.sh run on the built binary names
             installed, non-dev Debian packages.
  configs    deploy/config/*.conf: every option exists for its command.
  sizing     deploy/sizing.tsv (peak RSS per model, image size and precision, from `paliflow bench`) is
             well-formed and every measured figure is the one its evidence holds (a committed bench --json
             file: max of load_peak_rss_bytes and peak_rss_bytes); then every inference worker the deploy
             files start (systemd units with their --config, Kubernetes Deployments with their ConfigMap)
             sets a precision and a model the table has, its memory limit (MemoryMax; limits and requests)
             is at least the peak x 1.10 and MemoryHigh at least the peak x 1.05, and the producer's
             image-size is the model's.
Exit 0 pass, 1 fail, 77 skipped (a tool missing)."""
import argparse
import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pftest import Findings  # noqa: E402

FINDINGS = Findings()   # every problem of a deploy/ check in one run
fail = FINDINGS.fail


def skip(msg):
    print("SKIP: %s" % msg)
    sys.exit(77)


_HELP = {}


def help_flags(paliflow, cmd):
    """The long options `paliflow CMD --help` documents."""
    if cmd not in _HELP:
        r = subprocess.run([paliflow, cmd, "--help"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            fail("paliflow %s --help exited %d" % (cmd, r.returncode))
        _HELP[cmd] = set(re.findall(r"--([a-z0-9][a-z0-9-]*)", r.stdout))
    return _HELP[cmd]


def config_options(text):
    """[(name, value)] of a paliflow config file."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        out.append((name.strip(), value.strip() if _ else None))
    return out


def check_config(paliflow, cmd, text, where):
    flags = help_flags(paliflow, cmd)
    opts = config_options(text)
    for name, _ in opts:
        if name not in flags:
            fail("%s: option '%s' is not an option of paliflow %s" % (where, name, cmd))
    return dict(opts)


def check_args(paliflow, argv, where):
    """argv = [cmd, --flag, value, ...]: the command exists and every --flag is one of its options."""
    cmd = argv[0]
    flags = help_flags(paliflow, cmd)
    for a in argv[1:]:
        if a.startswith("--"):
            name = a[2:].split("=", 1)[0]
            if name not in flags:
                fail("%s: --%s is not an option of paliflow %s" % (where, name, cmd))


# ---------------------------------------------------------------------------------------------- yamllint

def c_yamllint(a):
    if not shutil.which("yamllint"):
        skip("yamllint not installed (Debian package yamllint, in .ci/packages)")
    k8s = os.path.join(a.source, "deploy", "k8s")
    r = subprocess.run(["yamllint", "-s", "-f", "parsable", "-c", os.path.join(k8s, ".yamllint"), k8s],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail("yamllint:\n" + r.stdout + r.stderr)


# ---------------------------------------------------------------------------------------------- k8s

def quantity(q):
    m = re.fullmatch(r"([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(q))
    if not m:
        raise ValueError("not a quantity: %r" % q)
    mult = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2 ** 10, "Mi": 2 ** 20,
            "Gi": 2 ** 30, "Ti": 2 ** 40}[m.group(2)]
    return float(m.group(1)) * mult


def check_type(client, val, typ, path):
    if val is None:
        return
    if typ.startswith("list["):
        if not isinstance(val, list):
            return fail("%s: want a list" % path)
        for i, v in enumerate(val):
            check_type(client, v, typ[5:-1], "%s[%d]" % (path, i))
    elif typ.startswith("dict("):
        if not isinstance(val, dict):
            return fail("%s: want a map" % path)
        inner = typ[5:-1].split(", ", 1)[1]
        for k, v in val.items():
            check_type(client, v, inner, "%s.%s" % (path, k))
    elif typ == "str":
        if not isinstance(val, str):
            fail("%s: want a string, got %r (quote it)" % (path, val))
    elif typ == "int":
        if not isinstance(val, int) or isinstance(val, bool):
            fail("%s: want an integer, got %r" % (path, val))
    elif typ == "bool":
        if not isinstance(val, bool):
            fail("%s: want true/false, got %r" % (path, val))
    elif typ == "float":
        if not isinstance(val, (int, float)) or isinstance(val, bool):
            fail("%s: want a number, got %r" % (path, val))
    elif typ in ("object", "datetime"):
        pass
    else:
        check_model(client, val, typ, path)


def check_model(client, obj, klass_name, path):
    """Every field of OBJ is a field of the API type (by its JSON name), with the right type."""
    klass = getattr(client, klass_name, None)
    if klass is None:
        return fail("%s: no API type %s" % (path, klass_name))
    if not isinstance(obj, dict):
        return fail("%s: want a map (%s)" % (path, klass_name))
    rev = {v: k for k, v in klass.attribute_map.items()}
    for key, val in obj.items():
        if key not in rev:
            fail("%s: unknown field '%s' in %s" % (path, key, klass_name))
            continue
        check_type(client, val, klass.openapi_types[rev[key]], "%s.%s" % (path, key))


KINDS = {("v1", "Namespace"): "V1Namespace", ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
         ("v1", "ConfigMap"): "V1ConfigMap", ("v1", "Secret"): "V1Secret", ("v1", "Service"): "V1Service",
         ("apps/v1", "Deployment"): "V1Deployment"}


def c_k8s(a):
    try:
        import yaml
        from kubernetes import client
    except ImportError as e:
        skip("%s (Debian packages python3-yaml, python3-kubernetes, in .ci/packages)" % e)
    k8s = os.path.join(a.source, "deploy", "k8s")
    kust = yaml.safe_load(open(os.path.join(k8s, "kustomization.yaml")))
    files = list(kust["resources"]) + ["secrets.example.yaml"]
    for f in sorted(os.listdir(k8s)):
        if f.endswith(".yaml") and f not in files and f != "kustomization.yaml":
            fail("deploy/k8s/%s is not listed in kustomization.yaml" % f)
    docs = []
    for f in files:
        path = os.path.join(k8s, f)
        if not os.path.exists(path):
            fail("kustomization.yaml lists %s, which does not exist" % f)
            continue
        for d in yaml.safe_load_all(open(path)):
            if d:
                docs.append((f, d))
    api = client.ApiClient()
    objs = {}
    for f, d in docs:
        where = "%s %s/%s" % (f, d.get("kind"), (d.get("metadata") or {}).get("name"))
        klass = KINDS.get((d.get("apiVersion"), d.get("kind")))
        if not klass:
            fail("%s: unexpected apiVersion/kind %s/%s" % (where, d.get("apiVersion"), d.get("kind")))
            continue
        check_model(client, d, klass, where)
        try:   # required fields and enums, as the generated client checks them
            api._ApiClient__deserialize(d, klass)
        except (ValueError, TypeError) as e:
            fail("%s: %s" % (where, e))
        meta = d.get("metadata", {})
        if d["kind"] != "Namespace" and meta.get("namespace") != kust.get("namespace"):
            fail("%s: namespace %r, the kustomization says %r" % (where, meta.get("namespace"), kust.get("namespace")))
        if (d["kind"], meta.get("name")) in objs:
            fail("%s: defined twice" % where)
        objs[(d["kind"], meta.get("name"))] = d
    cms = {n: o.get("data", {}) for (k, n), o in objs.items() if k == "ConfigMap"}
    secrets = {n: dict(o.get("data", {}), **o.get("stringData", {})) for (k, n), o in objs.items() if k == "Secret"}
    pvcs = {n for (k, n) in objs if k == "PersistentVolumeClaim"}
    services = {n: o for (k, n), o in objs.items() if k == "Service"}
    deployments = {n: o for (k, n), o in objs.items() if k == "Deployment"}
    binds = {}   # (deployment, containerPort) -> what binds it
    for name, dep in deployments.items():
        where = "Deployment/%s" % name
        spec = dep["spec"]
        tpl = spec["template"]
        labels = tpl["metadata"].get("labels", {})
        for k, v in spec["selector"]["matchLabels"].items():
            if labels.get(k) != v:
                fail("%s: selector %s=%s does not match the pod labels" % (where, k, v))
        pod = tpl["spec"]
        psc = pod.get("securityContext", {})
        if not psc.get("runAsNonRoot") or psc.get("runAsUser", 0) == 0:
            fail("%s: the pod must run as a non-root user" % where)
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        for v in vols.values():
            if "configMap" in v and v["configMap"]["name"] not in cms:
                fail("%s: volume %s: no ConfigMap %s" % (where, v["name"], v["configMap"]["name"]))
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                fail("%s: volume %s: no Secret %s" % (where, v["name"], v["secret"]["secretName"]))
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in pvcs:
                fail("%s: volume %s: no PersistentVolumeClaim %s" % (where, v["name"],
                                                                    v["persistentVolumeClaim"]["claimName"]))
        for c in pod["containers"]:
            cw = "%s container %s" % (where, c["name"])
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            numbers = set(ports.values())
            res = c.get("resources", {})
            for kind in ("cpu", "memory"):
                req, lim = res.get("requests", {}).get(kind), res.get("limits", {}).get(kind)
                if req is None or lim is None:
                    fail("%s: set requests and limits for %s" % (cw, kind))
                elif quantity(req) > quantity(lim):
                    fail("%s: %s request %s above the limit %s" % (cw, kind, req, lim))
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False or not sc.get("readOnlyRootFilesystem") or \
                    "ALL" not in sc.get("capabilities", {}).get("drop", []):
                fail("%s: want allowPrivilegeEscalation false, readOnlyRootFilesystem, capabilities drop ALL" % cw)
            for probe in ("livenessProbe", "readinessProbe"):
                pr = c.get(probe)
                if not pr:
                    fail("%s: no %s" % (cw, probe))
                    continue
                hg = pr.get("httpGet", {})
                if hg.get("port") not in ports and hg.get("port") not in numbers:
                    fail("%s: %s port %r is not a container port" % (cw, probe, hg.get("port")))
                if hg.get("path") not in ("/healthz", "/readyz"):
                    fail("%s: %s path %r (paliflow serves /healthz and /readyz)" % (cw, probe, hg.get("path")))
            mounts = {}
            for m in c.get("volumeMounts", []):
                if m["name"] not in vols:
                    fail("%s: mounts unknown volume %s" % (cw, m["name"]))
                    continue
                v = vols[m["name"]]
                keys = cms.get(v.get("configMap", {}).get("name")) or secrets.get(v.get("secret", {}).get("secretName"))
                if m.get("subPath") and keys is not None and m["subPath"] not in keys:
                    fail("%s: subPath %s is not a key of volume %s" % (cw, m["subPath"], m["name"]))
                mounts[m["mountPath"]] = (m, keys)
            args = c.get("args", [])
            check_args(a.paliflow, args, cw)
            conf = {}
            if "--config" in args:
                path = args[args.index("--config") + 1]
                m, keys = mounts.get(path, (None, None))
                if not m or not keys or m.get("subPath") not in keys:
                    fail("%s: --config %s is not mounted from a ConfigMap key" % (cw, path))
                else:
                    conf = check_config(a.paliflow, args[0], keys[m["subPath"]], "%s %s" % (cw, path))

            def mounted(path):
                d, base = os.path.dirname(path), os.path.basename(path)
                if path in mounts:
                    return True
                m, keys = mounts.get(d, (None, None))
                return bool(m) and keys is not None and base in keys

            for opt in ("curve-server-key", "curve-client-key", "curve-server-public"):
                if opt in conf and not mounted(conf[opt]):
                    fail("%s: %s = %s is not mounted (no such key in the volume)" % (cw, opt, conf[opt]))
            for opt in ("curve-allow", "model", "tokenizer", "list", "db", "out", "report"):
                if opt in conf and not any(conf[opt] == mp or conf[opt].startswith(mp.rstrip("/") + "/")
                                           for mp in mounts):
                    fail("%s: %s = %s is not on a mounted volume" % (cw, opt, conf[opt]))
            if "metrics" in conf:
                port = int(conf["metrics"].rsplit(":", 1)[1])
                if port not in numbers:
                    fail("%s: metrics = %s but the container declares no port %d" % (cw, conf["metrics"], port))
            for opt in ("bind", "publish"):
                if opt in conf:
                    port = int(conf[opt].rsplit(":", 1)[1])
                    if port not in numbers:
                        fail("%s: %s = %s but the container declares no port %d" % (cw, opt, conf[opt], port))
                    binds[(name, port)] = cw
            c["_conf"] = conf
    for name, svc in services.items():
        sel = svc["spec"].get("selector", {})
        targets = [d for d in deployments.values()
                   if all(d["spec"]["template"]["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if not targets:
            fail("Service/%s: its selector matches no pod template" % name)
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            ok = any(tp in (cp.get("name"), cp["containerPort"]) for d in targets
                     for c in d["spec"]["template"]["spec"]["containers"] for cp in c.get("ports", []))
            if not ok:
                fail("Service/%s: port %s targets %r, which no selected container declares" % (name, p["name"], tp))
    # endpoints in the configs: tcp://SERVICE:PORT reaches a container that binds that port
    for dname, dep in deployments.items():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            for opt in ("producer", "sink"):
                ep = c.get("_conf", {}).get(opt)
                if not ep:
                    continue
                m = re.fullmatch(r"tcp://([^:]+):(\d+)", ep)
                if not m:
                    fail("Deployment/%s %s: %s = %s is not tcp://HOST:PORT" % (dname, c["name"], opt, ep))
                    continue
                host, port = m.group(1), int(m.group(2))
                if host in ("127.0.0.1", "localhost"):   # the sink next to the producer in the hub pod
                    if (dname, port) not in binds:
                        fail("Deployment/%s %s: %s = %s: nothing in the pod binds %d" % (dname, c["name"], opt,
                                                                                           ep, port))
                    continue
                svc = services.get(host)
                sp = [p for p in svc["spec"]["ports"] if p["port"] == port] if svc else []
                if not sp:
                    fail("Deployment/%s %s: %s = %s: no Service %s with port %d" % (dname, c["name"], opt, ep,
                                                                                     host, port))
                    continue
                tp = sp[0].get("targetPort", port)
                reached = [(d, cc) for d, dd in deployments.items()
                           for cc in dd["spec"]["template"]["spec"]["containers"]
                           for cp in cc.get("ports", []) if tp in (cp.get("name"), cp["containerPort"])
                           and all(dd["spec"]["template"]["metadata"]["labels"].get(k) == v
                                   for k, v in svc["spec"]["selector"].items())]
                want_cmd = "producer" if opt == "producer" else "sink"
                if not any(cc["args"][0] == want_cmd and (d, cp["containerPort"]) in binds
                           for d, cc in reached for cp in cc.get("ports", [])
                           if tp in (cp.get("name"), cp["containerPort"])):
                    fail("Deployment/%s %s: %s = %s does not reach the %s's bound port" % (dname, c["name"], opt,
                                                                                            ep, want_cmd))


# ---------------------------------------------------------------------------------------------- systemd

def c_systemd(a):
    sa = shutil.which("systemd-analyze")
    if not sa:
        skip("systemd-analyze not installed (Debian package systemd, in .ci/packages)")
    src = os.path.join(a.source, "deploy", "systemd")
    units = sorted(f for f in os.listdir(src) if f.endswith(".service"))
    if not any("@" in u for u in units):
        fail("no templated worker unit (name@.service)")
    tmp = tempfile.mkdtemp(prefix="pf_units_")
    try:
        verify = []
        for u in units:
            text = open(os.path.join(src, u)).read()
            lines = dict(re.findall(r"^([A-Za-z]+)=(.*)$", text, re.M))
            for key, want in (("DynamicUser", "yes"), ("ProtectSystem", "strict"), ("NoNewPrivileges", "yes")):
                if lines.get(key) != want:
                    fail("%s: want %s=%s" % (u, key, want))
            for key in ("MemoryMax", "Restart", "ExecStart", "TimeoutStopSec"):
                if key not in lines:
                    fail("%s: no %s=" % (u, key))
            argv = shlex.split(lines.get("ExecStart", ""))
            if not argv or argv[0] != "/usr/local/bin/paliflow":
                fail("%s: ExecStart should run /usr/local/bin/paliflow" % u)
                continue
            check_args(a.paliflow, argv[1:], u)
            if "--config" in argv:
                conf = argv[argv.index("--config") + 1]
                local = os.path.join(a.source, "deploy", "config", os.path.basename(conf))
                if not os.path.exists(local):
                    fail("%s: --config %s has no example in deploy/config" % (u, conf))
            for cred in re.findall(r"%d/([A-Za-z0-9_.-]+)", lines.get("ExecStart", "")):
                if not re.search(r"^LoadCredential=%s:" % re.escape(cred), text, re.M):
                    fail("%s: ExecStart uses the credential %s, which no LoadCredential= provides" % (u, cred))
            if "@" in u and "%i" not in lines.get("ExecStart", ""):
                fail("%s: a template whose ExecStart ignores the instance (%%i)" % u)
            # systemd-analyze checks that the binary exists: point it at the build
            with open(os.path.join(tmp, u), "w") as f:
                f.write(text.replace("/usr/local/bin/paliflow", os.path.abspath(a.paliflow)))
            if u.endswith("@.service"):
                inst = u.replace("@.service", "@9201.service")
                os.symlink(u, os.path.join(tmp, inst))
                verify.append(os.path.join(tmp, inst))
            else:
                verify.append(os.path.join(tmp, u))
        r = subprocess.run([sa, "verify", "--man=no"] + verify, capture_output=True, text=True, cwd=tmp)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or out:
            fail("systemd-analyze verify (exit %d):\n%s" % (r.returncode, out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- container

def dockerfile_instructions(text):
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        cur += " " + s[:-1] if s.endswith("\\") else " " + s
        if not s.endswith("\\"):
            instr, _, rest = cur.strip().partition(" ")
            out.append((instr.upper(), rest.strip()))
            cur = ""
    return out


def c_container(a):
    path = os.path.join(a.source, "deploy", "Dockerfile")
    ins = dockerfile_instructions(open(path).read())
    stages, cur, args = [], None, {}
    for instr, rest in ins:
        if instr == "ARG" and cur is None:
            # a global ARG (before the first FROM) may name a base; its default is what a plain build uses
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif instr == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            image = re.sub(r"\$\{?(\w+)\}?", lambda v: args.get(v.group(1), v.group(0)), m.group(1))
            cur = {"image": image, "name": m.group(2), "ins": []}
            stages.append(cur)
        elif cur is None:
            fail("Dockerfile: %s before FROM" % instr)
        else:
            cur["ins"].append((instr, rest))
    if len(stages) < 2:
        fail("Dockerfile: want a multi-stage build (build + runtime)")
    for st in stages:
        if not re.fullmatch(r"(docker\.io/(library/)?)?debian:bookworm(-slim)?", st["image"]):
            fail("Dockerfile: stage %s is based on %s, want debian:bookworm[-slim]" % (st["name"], st["image"]))
        if not st["name"]:
            fail("Dockerfile: stage from %s has no name (FROM ... AS name)" % st["image"])
        for instr, rest in st["ins"]:
            if instr == "ADD":
                fail("Dockerfile: ADD (use COPY; no downloads)")
            if instr == "RUN":
                if re.search(r"\b(curl|wget|git\s+clone|pip3?\s+install)\b", rest):
                    fail("Dockerfile: RUN downloads outside apt: %s" % rest[:80])
                if "apt-get install" in rest:
                    for need in ("apt-get update", "--no-install-recommends", "-y", "rm -rf /var/lib/apt/lists/*"):
                        if need not in rest:
                            fail("Dockerfile: an apt-get install RUN lacks '%s'" % need)
    build, run = stages[0], stages[-1]
    if not any(i == "COPY" and ".ci/packages" in r for i, r in build["ins"]) or \
            not any(i == "RUN" and "/tmp/packages" in r and "apt-get install" in r for i, r in build["ins"]):
        fail("Dockerfile: the build stage should install .ci/packages (the packages CI uses)")
    users = [r for i, r in run["ins"] if i == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        fail("Dockerfile: the runtime stage must switch to a non-root USER")
    eps = [r for i, r in run["ins"] if i == "ENTRYPOINT"]
    if not eps or not eps[-1].startswith("["):
        fail("Dockerfile: the runtime stage needs an exec-form ENTRYPOINT")
    for i, r in run["ins"]:
        if i == "COPY":
            if not r.startswith("--from="):
                fail("Dockerfile: the runtime stage copies from the build context: %s" % r)
            elif not re.search(r"(/paliflow|runtime-packages\.txt)\s+\S+$", r):
                fail("Dockerfile: the runtime stage copies more than the binary: %s" % r)
    if not any(i == "RUN" and "runtime-packages.txt" in r for i, r in run["ins"]):
        fail("Dockerfile: the runtime stage should install the packages deploy/runtime-packages.sh found")
    ign = os.path.join(a.source, "deploy", "Dockerfile.dockerignore")
    if not os.path.exists(ign) or not {".git", "build"} <= set(open(ign).read().split()):
        fail("deploy/Dockerfile.dockerignore should exclude .git and build")
    # the script the build stage runs, on this build: installed Debian runtime packages, no -dev
    r = subprocess.run(["sh", os.path.join(a.source, "deploy", "runtime-packages.sh"), a.paliflow],
                       capture_output=True, text=True)
    pkgs = r.stdout.split()
    if r.returncode != 0 or "libzmq5" not in pkgs:
        fail("runtime-packages.sh: exit %d, packages %s, %s" % (r.returncode, pkgs, r.stderr.strip()))
    for p in pkgs:
        if p.endswith("-dev") or subprocess.run(["dpkg-query", "-W", p], capture_output=True).returncode != 0:
            fail("runtime-packages.sh: %s is not an installed runtime package" % p)


def c_configs(a):
    d = os.path.join(a.source, "deploy", "config")
    confs = [f for f in os.listdir(d) if f.endswith(".conf")]
    if len(confs) < 4:
        fail("deploy/config: want the four roles' config files")
    for f in confs:
        check_config(a.paliflow, f[:-5], open(os.path.join(d, f)).read(), "deploy/config/" + f)

# ---------------------------------------------------------------------------------------------- sizing

# A limit is at least the peak RSS `paliflow bench` measured times HARD_HEADROOM: the worker holds what bench
# does not (the tokenizer, ~0.15 GB; sockets, queued items, the metrics server; allocator slack). MemoryHigh
# (systemd reclaims and throttles above it) at least times SOFT_HEADROOM.
HARD_HEADROOM = 1.10
SOFT_HEADROOM = 1.05
PRECISIONS = ("fp32", "bf16", "int8")
SIZING_COLUMNS = ["model", "image_size", "precision", "peak_rss_gb", "source", "evidence", "command"]


def sizing_table(source):
    """{(model, precision): row} of deploy/sizing.tsv, each row checked against its evidence."""
    path = os.path.join(source, "deploy", "sizing.tsv")
    rows = {}
    with open(path, newline="") as f:
        lines = [l for l in f if l.strip() and not l.startswith("#")]
    reader = csv.reader(lines, delimiter="\t")
    header = next(reader, None)
    if header != SIZING_COLUMNS:
        fail("deploy/sizing.tsv: header %r, want %r" % (header, SIZING_COLUMNS))
        return rows
    for n, cols in enumerate(reader, 2):
        where = "deploy/sizing.tsv row %d" % n
        if len(cols) != len(SIZING_COLUMNS):
            fail("%s: %d columns, want %d (tab-separated)" % (where, len(cols), len(SIZING_COLUMNS)))
            continue
        r = dict(zip(SIZING_COLUMNS, cols))
        try:
            r["image_size"] = int(r["image_size"])
            r["peak_rss_gb"] = float(r["peak_rss_gb"])
        except ValueError as e:
            fail("%s: %s" % (where, e))
            continue
        if r["precision"] not in PRECISIONS:
            fail("%s: precision %r, want one of %s" % (where, r["precision"], PRECISIONS))
        if not r["model"].endswith("-%d" % r["image_size"]):
            fail("%s: model %s is not the %d px one" % (where, r["model"], r["image_size"]))
        if r["source"] not in ("measured", "computed"):
            fail("%s: source %r, want measured or computed" % (where, r["source"]))
        if (r["model"], r["precision"]) in rows:
            fail("%s: %s %s listed twice" % (where, r["model"], r["precision"]))
        if r["source"] == "measured":
            check_measured(source, r, where)
        else:   # computed: weights + KV + 600 MB, as bench's budget; the evidence says from what
            if not r["evidence"].strip():
                fail("%s: a computed figure with no evidence (what it was computed from)" % where)
        rows[(r["model"], r["precision"])] = r
    if not rows:
        fail("deploy/sizing.tsv: no rows")
    return rows


def check_measured(source, r, where):
    """The row's figure is its bench --json file's, and the command is how that file was made."""
    ev = os.path.join(source, r["evidence"])
    try:
        b = json.load(open(ev))
    except (OSError, ValueError) as e:
        return fail("%s: evidence %s: %s" % (where, r["evidence"], e))
    peak = max(b.get("load_peak_rss_bytes", 0), b.get("peak_rss_bytes", 0)) / 1e9
    if abs(peak - r["peak_rss_gb"]) > 0.005:
        fail("%s: peak %.2f GB, but %s says %.3f GB (max of load_peak_rss_bytes, peak_rss_bytes)" % (
            where, r["peak_rss_gb"], r["evidence"], peak))
    if b.get("precision") != r["precision"]:
        fail("%s: precision %s, but %s ran %s" % (where, r["precision"], r["evidence"], b.get("precision")))
    cmd = r["command"]
    want = ["paliflow make-random-checkpoint --like %s " % r["model"], "paliflow bench ",
            "--precision %s" % r["precision"], "--json "]
    for w in want:
        if w not in cmd:
            fail("%s: the command does not say '%s': %s" % (where, w.strip(), cmd))


def mem_bytes_systemd(v):
    """systemd's MemoryMax=/MemoryHigh= value in bytes (K, M, G, T are powers of 1024)."""
    m = re.fullmatch(r"([0-9]+)([KMGT]?)", v.strip())
    if not m:
        raise ValueError("%r (want bytes with K/M/G/T)" % v)
    return int(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " ")


def worker_peak(rows, opts, where):
    """The table's peak (GB) for an inference worker's options, or None (fail says why)."""
    prec = opts.get("precision")
    if not prec:
        fail("%s: sets no precision (the default fp32 needs the most memory; say which one it is sized for)" % where)
        return None
    model = os.path.basename((opts.get("model") or "").rstrip("/"))
    precs = ("bf16", "int8") if prec == "auto" else (prec,)   # auto: bf16 with AVX512_BF16, else int8
    peaks = []
    for p in precs:
        r = rows.get((model, p))
        if not r:
            fail("%s: model %s at %s is not in deploy/sizing.tsv" % (where, model, p))
            return None
        peaks.append(r)
    return max(peaks, key=lambda r: r["peak_rss_gb"])


def check_limit(where, what, value_bytes, row, headroom):
    need = row["peak_rss_gb"] * 1e9 * headroom
    if value_bytes < need:
        fail("%s: %s = %.2f GiB, below the peak RSS %.2f GB (deploy/sizing.tsv: %s %s) x %.2f = %.2f GiB" % (
            where, what, value_bytes / 2 ** 30, row["peak_rss_gb"], row["model"], row["precision"], headroom,
            need / 2 ** 30))


def c_sizing(a):
    try:
        import yaml
    except ImportError as e:
        skip("%s (Debian package python3-yaml, in .ci/packages)" % e)
    rows = sizing_table(a.source)
    found = 0
    sizes = set()
    # systemd: the inference worker unit, its config file from deploy/config, its command line over it
    sd = os.path.join(a.source, "deploy", "systemd")
    for u in sorted(f for f in os.listdir(sd) if f.endswith(".service")):
        text = open(os.path.join(sd, u)).read()
        lines = dict(re.findall(r"^([A-Za-z]+)=(.*)$", text, re.M))
        argv = shlex.split(lines.get("ExecStart", ""))
        if len(argv) < 2 or argv[1] != "inference-worker":
            continue
        found += 1
        opts = {}
        if "--config" in argv:
            conf = os.path.join(a.source, "deploy", "config", os.path.basename(argv[argv.index("--config") + 1]))
            opts.update(config_options(open(conf).read()))
        for i, w in enumerate(argv):
            if w.startswith("--") and "=" in w:
                opts[w[2:].split("=", 1)[0]] = w.split("=", 1)[1]
            elif w.startswith("--") and i + 1 < len(argv):
                opts[w[2:]] = argv[i + 1]
        row = worker_peak(rows, opts, "deploy/systemd/" + u)
        if not row:
            continue
        sizes.add(row["image_size"])
        for key, headroom in (("MemoryMax", HARD_HEADROOM), ("MemoryHigh", SOFT_HEADROOM)):
            if key not in lines:
                if key == "MemoryMax":
                    fail("deploy/systemd/%s: no MemoryMax=" % u)
                continue
            try:
                check_limit("deploy/systemd/" + u, key, mem_bytes_systemd(lines[key]), row, headroom)
            except ValueError as e:
                fail("deploy/systemd/%s: %s: %s" % (u, key, e))
    # Kubernetes: Deployments running inference-worker, their --config from the ConfigMap
    k8s = os.path.join(a.source, "deploy", "k8s")
    docs = [d for f in sorted(os.listdir(k8s)) if f.endswith(".yaml")
            for d in yaml.safe_load_all(open(os.path.join(k8s, f))) if d]
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
    for d in docs:
        if d.get("kind") != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            args = c.get("args", [])
            cw = "deploy/k8s Deployment/%s container %s" % (d["metadata"]["name"], c["name"])
            conf = {}
            if "--config" in args:
                path = args[args.index("--config") + 1]
                for m in c.get("volumeMounts", []):
                    cm = vols.get(m["name"], {}).get("configMap", {}).get("name")
                    if m["mountPath"] == path and cm in cms:
                        conf = dict(config_options(cms[cm].get(m.get("subPath", ""), "")))
            if not args or args[0] != "inference-worker":
                continue
            found += 1
            for i, w in enumerate(args):
                if w.startswith("--") and i + 1 < len(args) and w != "--config":
                    conf[w[2:]] = args[i + 1]
            row = worker_peak(rows, conf, cw)
            if not row:
                continue
            sizes.add(row["image_size"])
            res = c.get("resources", {})
            for kind in ("limits", "requests"):
                q = res.get(kind, {}).get("memory")
                if q is None:
                    fail("%s: no %s.memory" % (cw, kind))
                else:
                    check_limit(cw, "%s.memory %s" % (kind, q), quantity(q), row, HARD_HEADROOM)
    if not found:
        fail("no inference worker found in deploy/systemd or deploy/k8s")
    # the producers' image size is the one the workers' model was sized (and made) for
    producers = [("deploy/config/producer.conf", dict(config_options(open(os.path.join(
        a.source, "deploy", "config", "producer.conf")).read())))]
    producers += [("deploy/k8s ConfigMap %s producer.conf" % n, dict(config_options(data["producer.conf"])))
                  for n, data in cms.items() if "producer.conf" in data]
    for where, conf in producers:
        if "image-size" in conf and sizes and int(conf["image-size"]) not in sizes:
            fail("%s: image-size %s, but the inference workers are sized for %s px" % (where, conf["image-size"],
                                                                                       sorted(sizes)))
    # the comments beside the limits point at the table, not at figures of their own
    for f in ("deploy/systemd/paliflow-inference-worker@.service", "deploy/k8s/inference.yaml"):
        text = open(os.path.join(a.source, f)).read()
        if "deploy/sizing.tsv" not in text:
            fail("%s: its sizing comment does not point at deploy/sizing.tsv" % f)
        if re.search(r"no measured figures", text):
            fail("%s: says there are no measured figures (deploy/sizing.tsv has them)" % f)
    print("deploy/sizing.tsv: %d rows; %d inference worker definitions checked" % (len(rows), found))


CHECKS = {"yamllint": c_yamllint, "k8s": c_k8s, "systemd": c_systemd, "container": c_container,
          "configs": c_configs, "sizing": c_sizing}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("check", choices=sorted(CHECKS))
    ap.add_argument("--source", required=True)
    ap.add_argument("--paliflow", required=True)
    a = ap.parse_args()
    CHECKS[a.check](a)
    return FINDINGS.report("deploy %s" % a.check)


if __name__ == "__main__":
    sys.exit(main())
