#!/usr/bin/env python3
"""Checks of docker/ and helm/dtm/ that need neither helm nor docker (tests/deploy/packaging_tests.cmake).

  packaging_test.py yamllint     yamllint over the chart's plain YAML
  packaging_test.py structure    templates: balanced {{ }} and blocks, every .Values path exists in
                                 values.yaml, every value in values.yaml is used; what training
                                 gangs need is wired (headless gang Service, POD_IP from the
                                 downward API and the --gang-* flags, NCCL env and /dev/shm, a
                                 ReadWriteMany claim at the coordinator's --data-root in every pod,
                                 NCCL in the CUDA worker image)
  packaging_test.py flags        every --flag and DTM_* variable passed to dtm-coordinator,
                                 dtm-worker, dtmctl or the health check is in that program's --help
  packaging_test.py healthcheck  docker/grpc_health_check.py against a real dtm-coordinator
  packaging_test.py              all of them

Each check first runs itself on a synthetic mistake and fails if it does not catch it, so that a
checker that silently accepts everything cannot pass. Environment: DTM_SOURCE_DIR,
DTM_COORDINATOR_BIN, DTM_WORKER_BIN, DTMCTL (as tests/integration uses).
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SRC = Path(os.environ.get("DTM_SOURCE_DIR", Path(__file__).resolve().parents[2]))
CHART = SRC / "helm" / "dtm"
TEMPLATES = CHART / "templates"
DOCKERFILES = sorted((SRC / "docker").glob("*.Dockerfile"))
HEALTH_SCRIPT = SRC / "docker" / "grpc_health_check.py"
# Debian's python3 has python3-grpcio (install_deps.sh); another python3 on PATH may not.
PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def fail(errors, what):
    if errors:
        print(f"FAIL {what}:")
        for e in errors:
            print("  " + e)
        return 1
    print(f"ok   {what}")
    return 0


def need_env(name):
    if not os.environ.get(name):
        raise SystemExit(f"FAIL: set {name} (see the docstring of {Path(__file__).name})")
    return os.environ[name]


def load_yaml(path):
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SystemExit(f"FAIL: {path} is not YAML: {e}")


def expect_caught(errors, what):
    """A self-check: the checker must report the planted mistake."""
    if not errors:
        raise SystemExit(f"FAIL self-check: {what} was not caught; the checker is broken")


# ---------------------------------------------------------------- yamllint
YAMLLINT_CONFIG = SRC / "tests" / "deploy" / "packaging_yamllint.yml"


def yamllint(paths):
    r = subprocess.run(["yamllint", "-f", "parsable", "-c", str(YAMLLINT_CONFIG), *map(str, paths)],
                       capture_output=True, text=True)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.strip()] if r.returncode else []


def check_yamllint():
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text("---\nkey: 1\nkey: 2   \n")  # duplicate key, trailing spaces
        expect_caught(yamllint([bad]), "yamllint on a duplicate key")
    plain = [p for p in CHART.rglob("*.y*ml") if TEMPLATES not in p.parents]
    plain.append(YAMLLINT_CONFIG)
    if len(plain) < 3:
        return fail([f"expected Chart.yaml and values.yaml under {CHART}"], "yamllint")
    return fail(yamllint(sorted(plain)), f"yamllint ({len(plain)} files)")


# ---------------------------------------------------------------- structure
ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)
OPENERS = re.compile(r"^-?\s*(if|range|with|define|block)\b")
END = re.compile(r"^-?\s*end\s*-?$")
VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_]\w*)+)")
# `$w := .Values.worker` or `$as := $w.autoscaling`: later `$w.x.y` means .Values.worker.x.y.
BIND = re.compile(r"\$(\w+)\s*:?=\s*(\.Values|\$\w+)((?:\.[A-Za-z_]\w*)*)")
VAR_REF = re.compile(r"\$(\w+)((?:\.[A-Za-z_]\w*)+)")
# An action that only names a subtree (`$t := .Values.training`) reads none of it by itself: what the
# template later reads through $t is, or $t handed on bare (`default "x" $t`), reading it whole.
ALIAS = re.compile(r"^\s*-?\s*\$(\w+)\s*:=\s*(?:\.Values|\$\w+)(?:\.[A-Za-z_]\w*)*\s*-?\s*$")


def template_errors(name, text, values):
    """Errors of one template; `used` paths (tuples) are added to the returned set."""
    errors, used = [], set()
    if text.count("{{") != text.count("}}"):
        errors.append(f"{name}: {text.count('{{')} '{{{{' but {text.count('}}')} '}}}}'")
    depth = 0
    for m in ACTION.finditer(text):
        body = m.group(1).strip()
        if body.startswith("/*") or body.startswith("- /*"):
            continue
        if "{{" in body:
            errors.append(f"{name}:{text[:m.start()].count(chr(10)) + 1}: '{{{{' opened inside an action")
        if OPENERS.match(body):
            depth += 1
        elif END.match(body):
            depth -= 1
            if depth < 0:
                errors.append(f"{name}:{text[:m.start()].count(chr(10)) + 1}: 'end' without an opening block")
                depth = 0
    if depth:
        errors.append(f"{name}: {depth} if/range/with/define block(s) without 'end'")
    binds, aliases = {}, set()
    for m in ACTION.finditer(text):
        body = m.group(1)
        for b in BIND.finditer(body):
            base = () if b.group(2) == ".Values" else binds.get(b.group(2)[1:])
            if base is not None:
                binds[b.group(1)] = base + tuple(p for p in b.group(3).split(".") if p)
        refs = [tuple(r.group(1).split(".")[1:]) for r in VALUES_REF.finditer(body)]
        for v in VAR_REF.finditer(body):
            if v.group(1) in binds:
                refs.append(binds[v.group(1)] + tuple(v.group(2).split(".")[1:]))
        alias = ALIAS.match(body)
        if alias:
            aliases.add(alias.group(1))
        for path in refs:
            node = values
            for i, key in enumerate(path):
                if not isinstance(node, dict) or key not in node:
                    line = text[:m.start()].count("\n") + 1
                    errors.append(f"{name}:{line}: .Values.{'.'.join(path)} is not in values.yaml "
                                  f"(no '{key}' under .Values.{'.'.join(path[:i]) or '(top)'})")
                    break
                node = node[key]
            else:
                if not alias:
                    used.add(path)
    for var in aliases & set(binds):
        bare = re.compile(rf"\${var}(?![\w.])")
        if any(bare.search(m.group(1)) for m in ACTION.finditer(text) if not ALIAS.match(m.group(1))):
            used.add(binds[var])
    return errors, used


def leaves(node, prefix=()):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from leaves(v, prefix + (k,))
    else:
        yield prefix


# ---------------------------------------------------------------- gang wiring
# Helm is not here to render the chart, so these read the templates' text: a YAML document of a
# template is what lies between '---' lines, and a value is named either as .Values.a.b.c or through
# a variable bound to a prefix of it ({{- $t := .Values.training }} ... $t.gangPort).
WORKER_DOCKERFILE = "worker.Dockerfile"


def bindings(text):
    binds = {}
    for m in ACTION.finditer(text):
        for b in BIND.finditer(m.group(1)):
            base = () if b.group(2) == ".Values" else binds.get(b.group(2)[1:])
            if base is not None:
                binds[b.group(1)] = base + tuple(p for p in b.group(3).split(".") if p)
    return binds


def value_name(text, dotted):
    """A regex matching the .Values path `dotted` as `text` may name it."""
    path = tuple(dotted.split("."))
    forms = [r"\.Values\." + re.escape(dotted)]
    for var, base in bindings(text).items():
        if base and path[:len(base)] == base and len(path) > len(base):
            forms.append(r"\$" + var + r"\." + re.escape(".".join(path[len(base):])))
    return "(?:" + "|".join(forms) + r")(?![\w.])"


def value_ref(text, dotted):
    """A regex matching `{{ VALUE }}` (spaces and '-' trims allowed)."""
    return r"\{\{-?\s*" + value_name(text, dotted) + r"\s*-?\}\}"


def documents(text):
    return re.split(r"(?m)^---\s*$", text)


def kind_of(doc):
    m = re.search(r"(?m)^kind:\s*(\w+)", doc)
    return m.group(1) if m else None


def mounts_claim(doc, file_text, mount_value):
    """The pod of `doc` mounts a volume at {{ mount_value }} whose volume is the shared claim."""
    m = re.search(r"\{name:\s*([\w-]+),\s*mountPath:\s*" + value_ref(file_text, mount_value) + r"\s*\}",
                  doc)
    claim = r"\s*\n\s*persistentVolumeClaim:\s*\{claimName:\s*\{\{\s*include \"dtm\.sharedClaim\" \.\s*\}\}\}"
    return bool(m) and bool(re.search(r"-\s*name:\s*" + re.escape(m.group(1)) + claim, doc))


def wiring_errors(texts):
    """What gang members and train jobs need from the chart and the CUDA image. texts: file name ->
    text, for every template and docker/worker.Dockerfile."""
    errors = []

    def need(ok, what):
        if not ok:
            errors.append(what)

    def docs_of(kind, name=None):
        return [(f, d) for f, text in texts.items() if name in (None, f)
                for d in documents(text) if kind_of(d) == kind]

    worker = docs_of("Deployment", "worker.yaml")
    coord = docs_of("Deployment", "coordinator.yaml")
    need(len(worker) == 1 and len(coord) == 1, "worker.yaml and coordinator.yaml: one Deployment each")
    if errors:
        return errors
    w, wt = worker[0][1], texts["worker.yaml"]
    c, ct = coord[0][1], texts["coordinator.yaml"]
    need(any(re.search(r"(?m)^\s*clusterIP:\s*None\s*$", d) and '"component" "worker")' in d
             and re.search(r"port:\s*" + value_ref(texts[f], "training.gangPort"), d)
             for f, d in docs_of("Service")),
         "no headless Service (clusterIP: None) selecting the worker pods with port training.gangPort")
    need(re.search(r"-\s*name:\s*POD_IP\s*\n\s*valueFrom:\s*\n\s*fieldRef:\s*"
                   r"\{fieldPath:\s*status\.podIP\}", w),
         "worker: no env POD_IP from the downward API (fieldPath: status.podIP)")
    need(re.search(r"-\s*--gang-address=\$\(POD_IP\):" + value_ref(wt, "training.gangPort"), w),
         "worker: no --gang-address=$(POD_IP):training.gangPort")
    need(re.search(r"-\s*--gang-bind=\$\(POD_IP\)\s*$", w, re.M), "worker: no --gang-bind=$(POD_IP)")
    need(re.search(r"containerPort:\s*" + value_ref(wt, "training.gangPort"), w),
         "worker: no containerPort training.gangPort")
    need(re.search(r"range\s+\$\w+,\s*\$\w+\s*:=\s*" + value_name(wt, "training.nccl.env"), w),
         "worker: training.nccl.env is not turned into environment variables")
    shm = re.search(r"\{name:\s*([\w-]+),\s*mountPath:\s*/dev/shm\}", w)
    need(shm and re.search(r"-\s*name:\s*" + re.escape(shm.group(1)) + r"\s*\n\s*emptyDir:\s*"
                           r"\{medium:\s*Memory,\s*sizeLimit:\s*"
                           + value_ref(wt, "training.nccl.shmSizeLimit") + r"\}", w),
         "worker: /dev/shm is not a memory emptyDir of sizeLimit training.nccl.shmSizeLimit")
    need(any(re.search(r"accessModes:\s*\[\s*ReadWriteMany\s*\]", d) and 'include "dtm.sharedClaim"' in d
             and re.search(r"\{\{-?\s*if\s.*" + value_name(texts[f], "sharedStorage.enabled"), texts[f])
             for f, d in docs_of("PersistentVolumeClaim")),
         "no PersistentVolumeClaim dtm.sharedClaim with accessModes [ReadWriteMany] under "
         "sharedStorage.enabled")
    need(mounts_claim(w, wt, "sharedStorage.mountPath"),
         "worker: the shared claim is not mounted at sharedStorage.mountPath")
    need(mounts_claim(c, ct, "sharedStorage.mountPath"),
         "coordinator: the shared claim is not mounted at sharedStorage.mountPath")
    need(re.search(r"-\s*--data-root=" + value_ref(ct, "sharedStorage.mountPath"), c),
         "coordinator: --data-root is not sharedStorage.mountPath")
    dockerfile = texts.get(WORKER_DOCKERFILE, "")
    need(re.search(r"grep -qa NCCL_IB_HCA /opt/libtorch/lib/libtorch_cuda\.so", dockerfile)
         and re.search(r"(?m)^COPY --from=build /opt/libtorch/lib/ /opt/libtorch/lib/\s*$", dockerfile),
         f"docker/{WORKER_DOCKERFILE}: no check that its libtorch carries NCCL, or lib/ not copied whole")
    return errors


# Broken copies: (file, text in it, replacement). Each must add an error to wiring_errors, so that no
# rule above can pass whatever the chart says.
_GANG_SELECTOR = ('publishNotReadyAddresses: true\n  selector:\n'
                  '    {{- include "dtm.selectorLabels" (dict "root" $ ')
WIRING_BREAKS = [
    ("worker.yaml", "clusterIP: None\n  publishNotReadyAddresses", "clusterIP: ''\n  publishNotReadyAddresses"),
    ("worker.yaml", _GANG_SELECTOR + '"component" "worker")', _GANG_SELECTOR + '"component" "coordinator")'),
    ("worker.yaml", "- {name: gang, port: {{ $t.gangPort }}", "- {name: gang, port: 29500"),
    ("worker.yaml", "fieldRef: {fieldPath: status.podIP}", "fieldRef: {fieldPath: status.hostIP}"),
    ("worker.yaml", "--gang-address=$(POD_IP):", "--gang-address=0.0.0.0:"),
    ("worker.yaml", "--gang-bind=$(POD_IP)", "--gang-bind=0.0.0.0"),
    ("worker.yaml", "containerPort: {{ $t.gangPort }}", "containerPort: 29500"),
    ("worker.yaml", ":= $t.nccl.env", ":= $t.nccl"),
    ("worker.yaml", "{medium: Memory,", "{medium: \"\","),
    ("worker.yaml", "{name: shared, mountPath: {{ $s.mountPath }}}", "{name: shared, mountPath: /shared}"),
    ("coordinator.yaml", "{name: shared, mountPath: {{ $s.mountPath }}}", "{name: shared, mountPath: /shared}"),
    ("coordinator.yaml", '{claimName: {{ include "dtm.sharedClaim" . }}}', "{claimName: dtm-data}"),
    ("coordinator.yaml", "--data-root={{ $s.mountPath }}", "--data-root=/data"),
    ("shared-storage.yaml", "[ReadWriteMany]", "[ReadWriteOnce]"),
    ("shared-storage.yaml", "{{- if and $s.enabled", "{{- if and true"),
    (WORKER_DOCKERFILE, "|| grep -qa NCCL_IB_HCA", "|| true"),
]


def check_wiring(texts):
    """wiring_errors of the real files, and how many broken copies it caught. The broken copies are
    tried on a chart that passes (where a checker accepting everything would hide): on one that
    fails, the errors already say what is missing."""
    errors, caught = wiring_errors(texts), 0
    for name, old, new in WIRING_BREAKS if not errors else []:
        if old not in texts.get(name, ""):
            raise SystemExit(f"FAIL self-check: {name} no longer holds {old!r}; update WIRING_BREAKS")
        broken = dict(texts, **{name: texts[name].replace(old, new)})
        expect_caught(wiring_errors(broken), f"{name} with {old!r} -> {new!r}")
        caught += 1
    return errors, caught


def unused_values(values, used):
    """A value no template reads is a documented knob that does nothing. A map handed on whole
    (toYaml of resources, nodeSelector, ...) counts as reading every value under it."""
    return [f"helm/dtm/values.yaml: .Values.{'.'.join(leaf)} is used by no template" for leaf in leaves(values)
            if not any(leaf[:len(u)] == u for u in used) and leaf not in {("nameOverride",), ("fullnameOverride",)}]


def check_structure():
    sample = {"a": {"b": 1}}
    two = {"a": {"b": 1, "c": 2}}
    expect_caught(unused_values(two, template_errors("synthetic", "{{- $x := .Values.a }}{{ $x.b }}", two)[1]),
                  "a value only reachable through a variable, never read")
    if unused_values(two, template_errors("synthetic", "{{- $x := .Values.a.c }}{{ .Values.a.b }}{{ default 0 $x }}",
                                          two)[1]):
        raise SystemExit("FAIL self-check: a value read through a bare variable was called unused")
    expect_caught(template_errors("synthetic", "{{ .Values.a.c }}", sample)[0], "a .Values path missing")
    expect_caught(template_errors("synthetic", "{{- $x := .Values.a }}{{ $x.nope }}", sample)[0],
                  "a missing path through a variable")
    expect_caught(template_errors("synthetic", "{{ if .Values.a.b }}x", sample)[0], "an 'if' without 'end'")
    expect_caught(template_errors("synthetic", "{{ .Values.a.b }", sample)[0], "an unclosed '{{'")
    errors = []
    chart = load_yaml(CHART / "Chart.yaml")
    if chart.get("apiVersion") != "v2" or chart.get("name") != CHART.name or not chart.get("version"):
        errors.append("Chart.yaml: needs apiVersion v2, name equal to the folder's, a version")
    values = load_yaml(CHART / "values.yaml")
    used = set()
    files = sorted(p for p in TEMPLATES.iterdir() if p.is_file())
    for path in files:
        e, u = template_errors(path.relative_to(SRC).as_posix(), path.read_text(), values)
        errors += e
        used |= u
    errors += unused_values(values, used)
    for must in ("_helpers.tpl", "NOTES.txt"):
        if not (TEMPLATES / must).exists():
            errors.append(f"helm/dtm/templates/{must} is missing")
    texts = {p.name: p.read_text() for p in files}
    texts[WORKER_DOCKERFILE] = (SRC / "docker" / WORKER_DOCKERFILE).read_text()
    wiring, caught = check_wiring(texts)
    errors += wiring
    return fail(errors, f"structure ({len(files)} templates, {len(used)} value paths, gang wiring: "
                        f"{caught} broken copies caught)")


# ---------------------------------------------------------------- flags
PROGRAMS = ("dtm-coordinator", "dtm-worker", "dtmctl", "dtm-health-check")
OTHER = "(other program)"  # redis-server, kubectl, docker...: their flags are not ours to check
OTHERS = {"redis-server", "redis-cli", "kubectl", "docker", "helm", "base64", "python3", "curl", "cmake"}
FLAG = re.compile(r"^--([a-z][a-z0-9-]*)")


def program_of(token):
    name = token.strip("\"'[],").rsplit("/", 1)[-1]
    name = re.sub(r":[\w.-]+$", "", name)  # an image, dtm-worker:0.1.0-cuda, runs its program
    if name == "grpc_health_check.py":
        return "dtm-health-check"
    if name in PROGRAMS:
        return name
    return OTHER if name in OTHERS else None


def tokens(line):
    return [t.strip("\"'[],") for t in line.split()]


class Helps:
    """--help text of each program (dtmctl: per subcommand), from the real binaries."""

    def __init__(self, bins):
        self.text = {}
        for prog, cmd in bins.items():
            self.text[(prog, None)] = self.run(cmd + ["--help"])
        self.subcommands = re.findall(r"^  ([a-z][a-z-]+)\s", self.text[("dtmctl", None)], re.M)
        for sub in self.subcommands:
            self.text[("dtmctl", sub)] = self.run(bins["dtmctl"] + [sub, "--help"])

    @staticmethod
    def run(cmd):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or "--help" not in r.stdout:
            raise SystemExit(f"FAIL: `{' '.join(cmd)}` gave no help (exit {r.returncode}): {r.stderr[-300:]}")
        return r.stdout

    def texts(self, prog, sub):
        if prog == "dtmctl" and sub is None:  # no subcommand known: any of them
            return [v for (p, _), v in self.text.items() if p == "dtmctl"]
        return [self.text[(prog, sub)]]

    def has_flag(self, prog, sub, flag):
        return any(re.search(rf"(?<![\w-])--{re.escape(flag)}(?![\w-])", t) for t in self.texts(prog, sub))

    def has_env(self, prog, sub, env):
        return any(re.search(rf"\${re.escape(env)}(?!\w)", t) for t in self.texts(prog, sub))


CHECKED = []  # (where, program, flag) of every flag looked up, for the summary line


def check_words(where, words, prog, sub, helps, errors):
    for w in words:
        m = FLAG.match(w)
        if m and prog not in (None, OTHER):
            CHECKED.append((where, prog, m.group(1)))
        if m and prog not in (None, OTHER) and not helps.has_flag(prog, sub, m.group(1)):
            errors.append(f"{where}: {prog}{' ' + sub if sub else ''} has no flag --{m.group(1)}")
        elif m and prog is None:
            errors.append(f"{where}: --{m.group(1)} passed, but to which program?")


def command_lines(where, words, helps, errors):
    """One shell-like command line: flags after a program name belong to it, up to a separator."""
    prog, sub, rest = None, None, []
    for w in words + ["|"]:
        if w in ("|", "&&", ";", "&", "||", "\\"):
            if prog:
                check_words(where, rest, prog, sub, helps, errors)
            prog, sub, rest = None, None, []
        elif prog in (None, OTHER) and program_of(w) not in (None, OTHER):
            prog, sub, rest = program_of(w), None, []  # e.g. `docker run ... IMAGE FLAGS`
        elif prog is None:
            prog = program_of(w)
        elif prog == "dtmctl" and sub is None and not rest and w in helps.subcommands:
            sub = w
        else:
            rest.append(w)


def check_template(name, text, helps):
    """YAML templates: `command: [PROG]` names the program of the args and env lines below it."""
    errors, prog = [], None
    for n, line in enumerate(text.splitlines(), 1):
        where = f"{name}:{n}"
        code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        if re.match(r"^\s*(---|(init)?[cC]ontainers:)", line):
            prog = None
        if re.match(r"^\s*(-\s*)?command:", code):
            words = tokens(code.split(":", 1)[1])
            prog = program_of(words[0]) or OTHER if words else OTHER
            check_words(where, words[1:], prog, None, helps, errors)
            continue
        env = re.match(r"^\s*-\s*name:\s*(DTM_\w+)", code)
        if env and prog not in (None, OTHER) and not helps.has_env(prog, None, env.group(1)):
            errors.append(f"{where}: {prog} reads no environment variable {env.group(1)}")
        if any(program_of(w) for w in tokens(code)):  # a command written out, e.g. in NOTES.txt
            command_lines(where, tokens(code), helps, errors)
        elif not name.endswith(".txt"):
            check_words(where, tokens(code), prog, None, helps, errors)
    return errors


def logical_lines(text):
    """Lines with their `\\` continuations joined, numbered by their first line."""
    out, buf, start = [], "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if not buf:
            start = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
        else:
            out.append((start, buf + line))
            buf = ""
    return out


def check_dockerfile(name, text, helps):
    """ENTRYPOINT names the program; CMD adds its arguments; HEALTHCHECK CMD runs its own program."""
    errors, stages = [], []
    for n, line in logical_lines(text):
        word = line.split(None, 1)
        if not word or word[0].startswith("#"):
            continue
        if word[0].upper() == "FROM":
            stages.append({"entry": None, "cmd": [], "env": []})
        elif word[0].upper() == "ENTRYPOINT":
            w = tokens(word[1])
            stages[-1]["entry"] = (f"{name}:{n}", program_of(w[0]) or OTHER, w[1:])
        elif word[0].upper() == "CMD":
            stages[-1]["cmd"].append((f"{name}:{n}", tokens(word[1])))
        elif word[0].upper() == "ENV":
            for env in re.findall(r"\b(DTM_\w+)=", word[1]):
                stages[-1]["env"].append((f"{name}:{n}", env))
        elif word[0].upper() == "HEALTHCHECK":
            w = tokens(word[1].split(" CMD ", 1)[1]) if " CMD " in word[1] else []
            if w:
                check_words(f"{name}:{n}", w[1:], program_of(w[0]) or OTHER, None, helps, errors)
    for st in stages:
        prog = st["entry"][1] if st["entry"] else None
        sub = None
        if st["entry"]:
            check_words(st["entry"][0], st["entry"][2], prog, None, helps, errors)
        for where, words in st["cmd"]:
            if prog is None:  # no ENTRYPOINT: CMD is the whole command
                command_lines(where, words, helps, errors)
                continue
            if prog == "dtmctl" and words and words[0] in helps.subcommands:
                sub = words[0]
            check_words(where, words, prog, sub, helps, errors)
        for where, env in st["env"]:
            if prog not in (None, OTHER) and not helps.has_env(prog, sub, env):
                errors.append(f"{where}: {prog} reads no environment variable {env}")
    return errors


def check_markdown(name, text, helps):
    """Commands in fenced code blocks of the READMEs."""
    errors, inside = [], False
    for n, line in logical_lines(text):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside and any(program_of(w) for w in tokens(line.split(" #", 1)[0])):
            command_lines(f"{name}:{n}", tokens(line.split(" #", 1)[0]), helps, errors)
    return errors


def check_flags():
    bins = {"dtm-coordinator": [need_env("DTM_COORDINATOR_BIN")], "dtm-worker": [need_env("DTM_WORKER_BIN")],
            "dtmctl": [need_env("DTMCTL")], "dtm-health-check": [sys.executable, str(HEALTH_SCRIPT)]}
    helps = Helps(bins)
    expect_caught(check_dockerfile("synthetic", 'FROM x\nENTRYPOINT ["dtm-coordinator"]\nCMD ["--lisen", "a"]\n',
                                   helps), "a misspelt coordinator flag in CMD")
    expect_caught(check_dockerfile("synthetic", 'FROM x\nENTRYPOINT ["dtmctl"]\nENV DTM_COORD=x\n', helps),
                  "an environment variable dtmctl does not read")
    expect_caught(check_template("synthetic", 'containers:\n  - command: ["dtm-worker"]\n    args:\n'
                                 '      - --model=/m\n      - --allow-insecure\n', helps),
                  "a coordinator-only flag passed to dtm-worker")
    expect_caught(check_markdown("synthetic", "```sh\ndtmctl submit x.yaml --wacth\n```\n", helps),
                  "a misspelt dtmctl submit flag in a README")
    if check_template("synthetic", 'containers:\n  - command: ["dtm-worker"]\n    args:\n      - --model=/m\n',
                      helps):
        raise SystemExit("FAIL self-check: a correct worker flag was refused")
    errors, count = [], 0
    CHECKED.clear()
    for path in sorted(p for p in TEMPLATES.iterdir() if p.is_file()):
        errors += check_template(path.relative_to(SRC).as_posix(), path.read_text(), helps)
        count += 1
    for path in DOCKERFILES:
        errors += check_dockerfile(path.relative_to(SRC).as_posix(), path.read_text(), helps)
        count += 1
    for path in (SRC / "docker" / "README.md", CHART / "README.md"):
        if path.exists():
            errors += check_markdown(path.relative_to(SRC).as_posix(), path.read_text(), helps)
            count += 1
    if len(DOCKERFILES) < 3:
        errors.append(f"expected 3 Dockerfiles in docker/, found {len(DOCKERFILES)}")
    progs = sorted({p for _, p, _ in CHECKED})
    if set(progs) != set(PROGRAMS):
        errors.append(f"flags were found for {progs} only; expected some for each of {list(PROGRAMS)}")
    return fail(errors, f"flags ({len(CHECKED)} flags of {', '.join(progs)} in {count} files)")


# ---------------------------------------------------------------- healthcheck
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(address):
    return subprocess.run([PY, str(HEALTH_SCRIPT), "--address", address, "--timeout", "2"],
                          capture_output=True, text=True, timeout=30)


def check_healthcheck():
    errors = []
    closed = health(f"127.0.0.1:{free_port()}")
    if closed.returncode != 1:
        errors.append(f"nothing listening: exit {closed.returncode}, expected 1 ({closed.stderr.strip()})")
    port = free_port()
    coord = subprocess.Popen([need_env("DTM_COORDINATOR_BIN"), "--redis", "memory", "--listen",
                              f"127.0.0.1:{port}", "--metrics-listen", ""],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, r = time.time() + 20, None
        while time.time() < deadline:
            r = health(f"127.0.0.1:{port}")
            if r.returncode == 0:
                break
            time.sleep(0.3)
        if r is None or r.returncode != 0:
            errors.append(f"running coordinator not reported SERVING: {r.stderr.strip() if r else ''}")
    finally:
        coord.terminate()
        coord.wait(timeout=20)
    return fail(errors, "healthcheck (docker/grpc_health_check.py against dtm-coordinator)")


CHECKS = {"yamllint": check_yamllint, "structure": check_structure, "flags": check_flags,
          "healthcheck": check_healthcheck}

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(CHECKS)
    unknown = [c for c in chosen if c not in CHECKS]
    if unknown:
        raise SystemExit(f"unknown check(s) {unknown}; choose from {list(CHECKS)}")
    sys.exit(1 if sum(CHECKS[c]() for c in chosen) else 0)
