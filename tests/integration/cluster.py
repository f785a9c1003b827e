"""A dtm service of real processes over loopback, for the end-to-end tests.

`Cluster` starts a redis-server (in a temporary folder, its own port), a dtm-coordinator on it and K
dtm-workers on the tiny model, each process writing its stderr to a log file of its own; it waits for
the ready lines, can kill -9 and restart any process (the coordinator on the same gRPC port, so the
workers find it again), reads the coordinator's Prometheus metrics and Redis keys, and runs dtmctl
against it. Every process it starts is killed when the cluster closes, and also when the test process
dies (PR_SET_PDEATHSIG), so a CTest timeout leaves nothing behind.

`Reference` makes the same probes and baseline with the single-process tools (`dtmctl make-probes`,
`dtmctl baseline`) and gives `dtmctl eval`'s numbers for a config: what the service must reproduce.

Environment: DTMCTL, DTM_COORDINATOR_BIN, DTM_WORKER_BIN, DTM_TINY_MODEL, DTM_BROWN_DIR, DTM_SOURCE_DIR;
DTM_KEEP_TMP=1 keeps the temporary folders.
"""
import atexit
import concurrent.futures
import ctypes
import faulthandler
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
import unittest
import urllib.request

DTMCTL = os.environ.get("DTMCTL", "")
COORDINATOR_BIN = os.environ.get("DTM_COORDINATOR_BIN", "")
WORKER_BIN = os.environ.get("DTM_WORKER_BIN", "")
MODEL = os.path.abspath(os.environ.get("DTM_TINY_MODEL", ""))
BROWN = os.environ.get("DTM_BROWN_DIR", "")
SOURCE_DIR = os.environ.get("DTM_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
KEEP_TMP = os.environ.get("DTM_KEEP_TMP") == "1"
# Tests never touch the user's own store (dtmctl local's default, in $XDG_DATA_HOME/dtm).
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="dtm-test-xdg-")
atexit.register(shutil.rmtree, os.environ["XDG_DATA_HOME"], True)

READY_TIMEOUT_S = 60
# A test process that hangs prints every thread's Python stack before CTest's 1500 s timeout kills it
# silently (and at once on SIGUSR1), so that a hang in CI says where it was.
HANG_DUMP_S = int(os.environ.get("DTM_HANG_DUMP_S", "1380"))
faulthandler.dump_traceback_later(HANG_DUMP_S, exit=True)
faulthandler.register(signal.SIGUSR1, all_threads=True)
# Component kinds of a Llama layer in dtm's order (common/components.h).
COMPONENT_KINDS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                   "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
COORDINATOR_READY = re.compile(r"dtm-coordinator ready: grpc port (\d+) metrics port (\d+)")
# The worker's own ready line; registration is confirmed separately in the coordinator's log.
WORKER_READY = re.compile(r"dtm-worker.*\bready\b")
PR_SET_PDEATHSIG = 1
# Resolved here, not in the child: between fork and exec only already-loaded code should run.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


class ClusterError(AssertionError):
    """A process did not start, died, or did not say what was expected in time."""


def _die_with_parent():
    # Runs in the child between fork and exec: the kernel sends SIGKILL when the test process dies.
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


# Children must die with the test process, but a preexec_fn makes subprocess fork() instead of
# vfork(), and fork() runs gRPC's atfork handlers: in a process holding a channel, the likely cause of
# a hang seen here once (service_test stuck after its first job, its main thread waiting for gRPC's
# "default-executor" thread to exit, no child running). setpriv (util-linux) sets the death signal
# itself and execs the program, so no fork handler runs; the preexec_fn is the fallback without it.
SETPRIV = shutil.which("setpriv")


def child(argv):
    """Popen arguments that start `argv` so that it is killed when this process dies."""
    argv = [str(a) for a in argv]
    if SETPRIV:
        return dict(args=[SETPRIV, "--pdeathsig", "KILL", "--", *argv])
    return dict(args=argv, preexec_fn=_die_with_parent)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_env():
    """The environment CTest sets; a clear error instead of a KeyError deep inside a test."""
    missing = [name for name, value in (("DTMCTL", DTMCTL), ("DTM_COORDINATOR_BIN", COORDINATOR_BIN),
                                        ("DTM_WORKER_BIN", WORKER_BIN), ("DTM_TINY_MODEL", os.environ.get("DTM_TINY_MODEL")),
                                        ("DTM_BROWN_DIR", BROWN)) if not value]
    if missing:
        raise ClusterError("environment: " + ", ".join(missing) + " not set (run through CTest)")
    for path in (DTMCTL, COORDINATOR_BIN, WORKER_BIN, REDIS_SERVER):
        if not os.access(path, os.X_OK):
            raise ClusterError(f"{path}: not an executable")
    if not os.path.isfile(os.path.join(MODEL, "config.json")):
        raise ClusterError(f"DTM_TINY_MODEL={MODEL}: no config.json (the tiny_model fixture makes it)")


# -- dtmctl

def run_dtmctl(*args, check=True, timeout=600):
    proc = subprocess.run(**child([DTMCTL, *args]), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dtmctl {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc



def dtmctl_per_config(args, configs, tmp, parallel=2):
    """{config: JSON} of `dtmctl ARGS --compress-file FILE` for each config: `parallel` processes at once,
    each loading the model once and scoring its share of the configs in turn, rather than one process
    per config (tests/cli/dtmctl_test.py and dtmctl_ppl_test.py check that a file's line prints what
    --compress prints for it)."""
    shares = [configs[i::parallel] for i in range(parallel) if configs[i::parallel]]

    def run_share(index, share):
        fd, path = tempfile.mkstemp(prefix=f"configs-{index}-", suffix=".txt", dir=tmp)
        with os.fdopen(fd, "w") as f:
            f.write("".join(c + "\n" for c in share))
        lines = run_dtmctl(*args, "--compress-file", path, timeout=3600).stdout.splitlines()
        results = [json.loads(line) for line in lines if line.strip()]
        if len(results) != len(share):
            raise ClusterError(f"dtmctl {args[0]} --compress-file {path}: {len(results)} results for {len(share)} configs")
        return dict(zip(share, results))

    out = {}
    with concurrent.futures.ThreadPoolExecutor(max(1, len(shares))) as pool:
        for results in pool.map(run_share, range(len(shares)), shares):
            out.update(results)
    return out

# -- processes

class Process:
    """One daemon: its command line, its log file (one per incarnation) and its Popen."""

    def __init__(self, name, argv, log_dir):
        self.name = name
        self.argv = list(argv)
        self.log_dir = log_dir
        self.incarnation = 0
        self.popen = None
        self.log_path = None

    def start(self, argv=None):
        if argv is not None:
            self.argv = list(argv)
        self.incarnation += 1
        self.log_path = os.path.join(self.log_dir, f"{self.name}.{self.incarnation}.log")
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(**child(self.argv), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def log_text(self):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def tail(self, lines=60):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def count_log(self, pattern):
        """How often `pattern` occurs in this incarnation's log so far."""
        return sum(1 for _ in re.finditer(pattern, self.log_text()))

    def wait_for_log(self, pattern, timeout=READY_TIMEOUT_S, what=None, after=0):
        """The first match of `pattern` in this incarnation's log beyond the first `after` (pass
        `count_log` taken before the event, so that an older line does not count); fails if the
        process exits first."""
        regex = re.compile(pattern)  # a compiled pattern comes back as it is
        deadline = time.monotonic() + timeout
        while True:
            matches = list(regex.finditer(self.log_text()))
            if len(matches) > after:
                return matches[after]
            if not self.alive():
                raise ClusterError(f"{self.name} exited with {self.popen.returncode} before logging "
                                   f"{what or regex.pattern!r}; its log:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.name} did not log {what or regex.pattern!r} within {timeout} s; "
                                   f"its log:\n{self.tail()}")
            time.sleep(0.05)

    def kill(self):
        """kill -9, and reap it."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=30)

    def stop(self, grace_s=10):
        """SIGTERM, then SIGKILL after `grace_s`."""
        if not self.alive():
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()


# -- Redis, spoken directly (RESP), so that values come back as the exact bytes

class RedisClient:
    def __init__(self, port, host="127.0.0.1"):
        self.address = (host, port)

    def command(self, *args):
        with socket.create_connection(self.address, timeout=10) as sock:
            payload = b"*%d\r\n" % len(args)
            for arg in args:
                data = arg if isinstance(arg, bytes) else str(arg).encode()
                payload += b"$%d\r\n%s\r\n" % (len(data), data)
            sock.sendall(payload)
            reader = sock.makefile("rb")
            return self._read(reader)

    def _read(self, reader):
        line = reader.readline()
        if not line:
            raise ClusterError(f"redis at {self.address}: connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise ClusterError(f"redis at {self.address}: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = reader.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read(reader) for _ in range(n)]
        raise ClusterError(f"redis at {self.address}: unexpected reply {line!r}")

    def ping(self):
        return self.command("PING") == "PONG"

    def keys(self, pattern):
        return sorted(k.decode() for k in self.command("KEYS", pattern))

    def get(self, key):
        return self.command("GET", key)


# -- Prometheus text format

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{(name, ((label, value), ...)): float} of every sample."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


# -- the Python gRPC stubs (proto/gen_python.sh)

_STUBS = None


def load_stubs():
    """Generates the stubs once per process into a temporary folder and imports them."""
    global _STUBS
    if _STUBS is None:
        out = tempfile.mkdtemp(prefix="dtm-pystubs-")
        subprocess.run([os.path.join(SOURCE_DIR, "proto", "gen_python.sh"), out], check=True)
        sys.path.insert(0, out)
        import grpc  # noqa: F401  (Debian's python3-grpcio)
        from dtm.v1 import (common_pb2, dtm_service_pb2, dtm_service_pb2_grpc, job_pb2, worker_service_pb2,
                            worker_service_pb2_grpc)
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        _STUBS = types.SimpleNamespace(grpc=grpc, common_pb2=common_pb2, dtm_service_pb2=dtm_service_pb2,
                                       dtm_service_pb2_grpc=dtm_service_pb2_grpc, job_pb2=job_pb2,
                                       worker_service_pb2=worker_service_pb2,
                                       worker_service_pb2_grpc=worker_service_pb2_grpc, health_pb2=health_pb2,
                                       health_pb2_grpc=health_pb2_grpc, dir=out)
        if not KEEP_TMP:
            import atexit
            atexit.register(shutil.rmtree, out, ignore_errors=True)
    return _STUBS


def component_names(layers):
    """Every component of a model with `layers` layers, layer-major, as dtm orders them."""
    return [f"model.layers.{layer}.{kind}" for layer in range(layers) for kind in COMPONENT_KINDS]


def config_of(components, method):
    """The canonical config holding `components`, each under `method` (entries sorted by component)."""
    return ",".join(f"{c}={method}" for c in sorted(components))


def components_of(config):
    """The components a config holds."""
    return set() if not config else {item.split("=", 1)[0] for item in config.split(",")}


def search_levels(doc):
    """A quant-search's result rows (`dtmctl results --format json`) by search level, each in rank order."""
    levels = {}
    for row in doc["results"]:
        levels.setdefault(row["search_level"], []).append(row)
    return levels


def level_candidates(parents, components, method):
    """Every child of the `parents` rows: each parent's components plus one it lacks; sorted, each once."""
    return sorted({config_of(components_of(p["config"]) | {c}, method) for p in parents for c in components
                   if c not in components_of(p["config"])})


# -- job specs

def spec_yaml(**fields):
    """A job spec as YAML; strings and lists are written as JSON, which YAML reads as such."""
    lines = []
    for key, value in fields.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(f"  {k}: {json.dumps(v)}" for k, v in value.items())
        elif isinstance(value, bool):
            lines.append(f"{key}: {'true' if value else 'false'}")
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


# -- test cases on a cluster

class ClusterTestCase(unittest.TestCase):
    """Test cases sharing one cluster per class: `new_cluster()` makes it (two workers unless
    overridden), `set_up_cluster()` prepares what the tests share once it runs; a failure in either
    closes the cluster again, and tearDownClass closes it after the last test. A failing test prints
    every process's log tail, since the cluster outlives the test and its logs would go with it."""

    @classmethod
    def new_cluster(cls):
        return Cluster(num_workers=2)

    @classmethod
    def set_up_cluster(cls):
        pass

    @classmethod
    def setUpClass(cls):
        cls.cluster = cls.new_cluster().__enter__()
        try:
            cls.set_up_cluster()
        except BaseException:
            cls.cluster.__exit__(*sys.exc_info())
            raise

    @classmethod
    def tearDownClass(cls):
        cls.cluster.__exit__(None, None, None)

    def results(self, job_id):
        """`dtmctl results JOB --format json`, parsed."""
        return json.loads(self.cluster.dtmctl("results", job_id, "--format", "json").stdout)

    def succeeded(self, job_id, timeout=300):
        """The job's results once it SUCCEEDED; fails the test with the job's error otherwise."""
        job = self.cluster.wait_job(job_id, timeout=timeout)
        self.assertEqual(job.state, load_stubs().job_pb2.JOB_STATE_SUCCEEDED, job.error.message)
        return self.results(job_id)

    def run(self, result=None):
        if result is None:
            return super().run(result)
        failures, errors = len(result.failures), len(result.errors)
        outcome = super().run(result)
        new = result.failures[failures:] + result.errors[errors:]
        if new:
            self.cluster.print_logs(self.id())
            # The failure again after the logs: a CI that keeps only part of the output keeps its end.
            for _, trace in new:
                print(f"===== {self.id()} failed =====\n{trace}", file=sys.stderr, flush=True)
        return outcome


# -- the cluster

class Cluster:
    def __init__(self, num_workers=2, lease_timeout_ms=3000, heartbeat_ms=500, worker_threads=1,
                 coordinator_log_level="debug", model=None, data_root="/", coordinator_args=(), worker_args=(),
                 token=None):
        require_env()
        self.num_workers = num_workers
        self.lease_timeout_ms = lease_timeout_ms
        self.heartbeat_ms = heartbeat_ms
        self.worker_threads = worker_threads
        # debug: the coordinator then logs every lease ("task T: leased to W as L"), which the worker
        # kill test needs to know what the killed worker held.
        self.coordinator_log_level = coordinator_log_level
        self.model = model or MODEL
        # The tests' probe files live in temporary folders of their own: the coordinator may read
        # anywhere unless a test is about --data-root.
        self.data_root = data_root
        self.coordinator_args = list(coordinator_args)
        # Every worker's extra flags: a list, or a dict by worker id.
        self.worker_args = worker_args
        # A bearer token both APIs then require: written to a file passed to every daemon and dtmctl.
        self.token = token
        self.token_file = None
        self.tmp = tempfile.mkdtemp(prefix="dtm-cluster-")
        if token:
            self.token_file = os.path.join(self.tmp, "token")
            with open(self.token_file, "w") as f:
                f.write(token + "\n")
            self.coordinator_args += ["--token-file", self.token_file]
        self.redis = None
        self.redis_port = None
        self.coordinator = None
        self.grpc_port = None
        self.metrics_port = None
        self.workers = {}
        self._channel = None

    # lifecycle

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.print_logs("cluster start failed")
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.print_logs(f"{exc_type.__name__}: {exc}")
        self.close()
        return False

    def start(self):
        self.start_redis()
        self.start_coordinator()
        for i in range(1, self.num_workers + 1):
            self.start_worker(f"w{i}")

    def close(self):
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        for worker in self.workers.values():
            worker.kill()
        for proc in (self.coordinator, self.redis):
            if proc is not None:
                proc.kill()
        if not KEEP_TMP:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print(f"cluster: kept {self.tmp}", file=sys.stderr)

    def processes(self):
        return [p for p in [self.redis, self.coordinator, *self.workers.values()] if p is not None]

    def print_logs(self, why="", lines=80):
        out = [f"===== cluster logs ({why}) in {self.tmp} ====="]
        for proc in self.processes():
            state = "running" if proc.alive() else f"exited {proc.popen.returncode if proc.popen else '-'}"
            out.append(f"----- {proc.name} #{proc.incarnation} ({state}), last {lines} lines of {proc.log_path} -----")
            out.append(proc.tail(lines))
        print("\n".join(out), file=sys.stderr, flush=True)

    # redis

    def start_redis(self, port=None):
        """Starts redis-server on a free port, or on `port` (a restart on the same data)."""
        data = os.path.join(self.tmp, "redis")
        os.makedirs(data, exist_ok=True)
        fixed = port
        for _ in range(1 if fixed else 5):
            port = fixed or free_port()
            proc = (self.redis if fixed and self.redis else Process("redis", [], self.tmp)).start([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "yes", "--appendfsync", "always", "--dir", data])
            client = RedisClient(port)
            deadline = time.monotonic() + 20
            while proc.alive() and time.monotonic() < deadline:
                try:
                    if client.ping():
                        self.redis, self.redis_port, self.redis_client = proc, port, client
                        return
                except (OSError, ClusterError):
                    pass
                time.sleep(0.05)
            proc.kill()  # most likely the port was taken meanwhile; try another
        raise ClusterError(f"redis-server did not start; its log:\n{proc.tail()}")

    def kill_redis(self):
        self.redis.kill()

    def restart_redis(self):
        """Starts Redis again on the same port and data folder (after kill_redis)."""
        self.start_redis(port=self.redis_port)

    # coordinator

    @property
    def address(self):
        return f"127.0.0.1:{self.grpc_port}"

    def coordinator_argv(self, listen):
        return [COORDINATOR_BIN, "--listen", listen, "--redis", f"redis://127.0.0.1:{self.redis_port}",
                "--metrics-listen", "127.0.0.1:0", "--lease-timeout-ms", str(self.lease_timeout_ms),
                "--heartbeat-ms", str(self.heartbeat_ms), "--log-level", self.coordinator_log_level,
                "--data-root", self.data_root, *self.coordinator_args]

    def start_coordinator(self):
        """Starts it on port 0 the first time, on the same port afterwards (a restart)."""
        listen = f"127.0.0.1:{self.grpc_port or 0}"
        if self.coordinator is None:
            self.coordinator = Process("coordinator", [], self.tmp)
        for _ in range(20):
            self.coordinator.start(self.coordinator_argv(listen))
            try:
                m = self.coordinator.wait_for_log(COORDINATOR_READY, what="dtm-coordinator ready")
                break
            except ClusterError:
                # On a restart the old port may be held for a moment by another socket (a client's
                # ephemeral port on a busy machine); the coordinator then refuses to start (no
                # SO_REUSEPORT). Try again; anything else is a real failure.
                if self.grpc_port is None or "cannot listen there" not in self.coordinator.log_text():
                    raise
                time.sleep(0.5)
        else:
            raise ClusterError(f"coordinator: port {self.grpc_port} stayed taken for 10 s after a restart")
        port, self.metrics_port = int(m.group(1)), int(m.group(2))
        if self.grpc_port is not None and port != self.grpc_port:
            raise ClusterError(f"coordinator restarted on port {port}, asked for {self.grpc_port}")
        self.grpc_port = port
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        return self.coordinator

    def kill_coordinator(self):
        self.coordinator.kill()

    def restart_coordinator(self, wait_workers=True):
        self.coordinator.kill()
        self.start_coordinator()
        if wait_workers:
            self.wait_workers_registered()

    # workers

    def worker_argv(self, worker_id):
        extra = self.worker_args.get(worker_id, []) if isinstance(self.worker_args, dict) else self.worker_args
        token = ["--token-file", self.token_file] if self.token_file else []
        return [WORKER_BIN, "--coordinator", self.address, "--model", self.model, "--threads",
                str(self.worker_threads), "--metrics-listen", "127.0.0.1:0", "--worker-id", worker_id,
                "--log-level", "info", *token, *extra]

    def start_worker(self, worker_id):
        proc = self.workers.get(worker_id) or Process(f"worker-{worker_id}", [], self.tmp)
        self.workers[worker_id] = proc
        # A restarted worker's earlier registration is still in this coordinator's log: wait for a new one.
        registered_before = self.coordinator.count_log(self.registered_pattern(worker_id))
        proc.start(self.worker_argv(worker_id))
        proc.wait_for_log(WORKER_READY, what="the worker's ready line")
        self.wait_worker_registered(worker_id, after=registered_before)
        return proc

    def kill_worker(self, worker_id):
        self.workers[worker_id].kill()

    @staticmethod
    def registered_pattern(worker_id):
        return r"worker " + re.escape(worker_id) + r": registered"

    def wait_worker_registered(self, worker_id, timeout=READY_TIMEOUT_S, after=0):
        """Until this coordinator incarnation has logged the worker's registration (its `after`+1-th)."""
        self.coordinator.wait_for_log(self.registered_pattern(worker_id), timeout=timeout,
                                      what=f"worker {worker_id}: registered", after=after)

    def wait_workers_registered(self, timeout=READY_TIMEOUT_S):
        for worker_id, proc in self.workers.items():
            if proc.alive():
                self.wait_worker_registered(worker_id, timeout)

    # metrics

    def metrics(self):
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return parse_metrics(reply.read().decode())

    def worker_metrics(self, worker_id):
        """The worker's /metrics (its port from its latest ready line)."""
        ports = re.findall(r"metrics port (\d+)", self.workers[worker_id].log_text())
        if not ports or ports[-1] == "0":
            raise ClusterError(f"worker {worker_id} serves no /metrics")
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[-1]}/metrics", timeout=10) as reply:
            return parse_metrics(reply.read().decode())

    def metric(self, name, default=None, **labels):
        """One sample of the coordinator's metrics; `default` when it is not exposed."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), default)

    def counters(self, *names):
        samples = self.metrics()
        missing = [n for n in names if (n, ()) not in samples]
        if missing:
            raise AssertionError(f"coordinator metrics lack {missing}")
        return {n: samples[(n, ())] for n in names}

    # dtmctl and gRPC

    def dtmctl(self, *args, check=True, timeout=600):
        """dtmctl against this coordinator (--coordinator is added)."""
        token = ["--token-file", self.token_file] if self.token_file else []
        return run_dtmctl(*args, "--coordinator", self.address, *token, check=check, timeout=timeout)

    def stub(self):
        stubs = load_stubs()
        if self._channel is None:
            self._channel = stubs.grpc.insecure_channel(self.address)
        return stubs.dtm_service_pb2_grpc.DtmServiceStub(self._channel)

    def call_metadata(self):
        """What every call of this cluster's client carries (the bearer token, when there is one)."""
        return [("authorization", f"Bearer {self.token}")] if self.token else None

    def get_job(self, job_id, timeout=10):
        stubs = load_stubs()
        return self.stub().GetJob(stubs.dtm_service_pb2.GetJobRequest(job_id=job_id), timeout=timeout,
                                  metadata=self.call_metadata())

    def wait_job(self, job_id, timeout=600, until=None):
        """Polls GetJob until `until(job)` (default: a terminal state); returns that Job."""
        job_pb2 = load_stubs().job_pb2
        terminal = (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)
        until = until or (lambda job: job.state in terminal)
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if until(job):
                return job
            if job.state in terminal:
                raise AssertionError(f"job {job_id} ended {job_pb2.JobState.Name(job.state)} "
                                     f"({job.error.message}) before the awaited condition")
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id}: condition not met within {timeout} s; last progress:\n{job.progress}")
            time.sleep(0.02)

    def write_spec(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path


# -- the single-process reference

class Reference:
    """Probes and a baseline made by dtmctl alone, and dtmctl eval's numbers per config."""

    def __init__(self, tmp, count, prefix, completion, threads=1, model=None):
        require_env()
        self.model = model or MODEL
        self.count, self.prefix, self.completion, self.threads = count, prefix, completion, threads
        self.dir = os.path.join(tmp, "reference")
        os.makedirs(self.dir, exist_ok=True)
        text = os.path.join(self.dir, "held-out.txt")
        run_dtmctl("brown-text", "--corpus", BROWN, "--split", "held-out", "--out", text)
        self.probes = os.path.join(self.dir, "probes.jsonl")
        made = json.loads(run_dtmctl("make-probes", "--model", self.model, "--corpus", text, "--count", count,
                                     "--prefix", prefix, "--out", self.probes).stdout)
        if made["probes"] != count:
            raise ClusterError(f"make-probes made {made['probes']} probes, asked for {count}")
        self.baseline = os.path.join(self.dir, "baseline.jsonl")
        run_dtmctl("baseline", "--model", self.model, "--probes", self.probes, "--completion", completion, "--out",
                   self.baseline, "--threads", threads)
        with open(self.baseline) as f:
            self.baseline_rows = [json.loads(line) for line in f if line.strip()]
        self._evals = {}

    def eval(self, config):
        """dtmctl eval's JSON for `config` ("" = the uncompressed model)."""
        if config not in self._evals:
            args = ["eval", "--model", self.model, "--baseline", self.baseline, "--compress", config, "--threads",
                    self.threads]
            if config:
                args.append("--no-noise-floor")
            self._evals[config] = json.loads(run_dtmctl(*args).stdout)
        return self._evals[config]

    def eval_many(self, configs, parallel=2):
        """eval() of each config, by `dtmctl eval --compress-file` (see dtmctl_per_config)."""
        todo = [c for c in dict.fromkeys(configs) if c not in self._evals]
        for config in [c for c in todo if not c]:
            self.eval(config)  # the uncompressed model, with its noise floor: no line of a file can say ""
        self._evals.update(dtmctl_per_config(
            ["eval", "--model", self.model, "--baseline", self.baseline, "--threads", self.threads, "--no-noise-floor"],
            [c for c in todo if c], self.dir, parallel))
        return {c: self._evals[c] for c in configs}
