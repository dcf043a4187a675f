#!/usr/bin/env bash
# The machine packages the tests run for real, installed from Debian's archive when missing:
#   prometheus (prometheus + promtool: the observability tests), nodejs + npm (the prometheus-operator
#   schemas the chart tests use), chromium (the dashboard's browser tests), openssl and curl (the
#   local Kubernetes cluster's certificates and health checks), libfaketime (a store server whose clock
#   is off, for the clock-skew tests).
# Anything else than Debian/Ubuntu: install those yourself; this prints what is missing and stops.
set -euo pipefail

declare -A need=([prometheus]=prometheus [promtool]=prometheus [node]=nodejs [npm]=npm
                 [/usr/bin/chromium]=chromium [openssl]=openssl [curl]=curl
                 [/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1]=libfaketime)
missing=()
for cmd in "${!need[@]}"; do
  if [[ $cmd == /* ]]; then [ -e "$cmd" ] && continue; else command -v "$cmd" >/dev/null && continue; fi
  [[ " ${missing[*]} " == *" ${need[$cmd]} "* ]] || missing+=("${need[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then sudo="sudo -n"
  else
    echo "system-deps: the tests need Debian packages ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null; then
  echo "system-deps: the tests need ${missing[*]} (no apt-get here: install them with your package manager)" >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]} from Debian (once; about a minute)"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "system-deps: apt-get failed installing ${missing[*]} (output above)" >&2
  exit 1
fi
