#!/usr/bin/env bash
# The system packages the test suite drives for real: Debian's chromium (the browser tests of the
# report and the web page; Playwright launches /usr/bin/chromium, it downloads no browser) and a
# PostgreSQL server (the catalog tests start a throw-away cluster with its initdb / pg_ctl).
# Installs what is missing with apt-get (as root, or through sudo); does nothing when both are there.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "system-deps: need ${missing[*]} (Debian packages); run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "system-deps: installing ${missing[*]} with apt-get" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
