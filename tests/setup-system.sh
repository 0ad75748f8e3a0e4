#!/usr/bin/env bash
# Installs the system tools the test suites drive for real, when they are missing, on a fresh
# Debian machine: Debian packages (venv, Node.js and npm, audio synthesis and encoding,
# promtool, headless Chromium) and the npm Telegram Bot API emulator. Idempotent (nothing is
# fetched when everything is there); tests/run.sh calls it before the suites.
set -euo pipefail
cd "$(dirname "$0")/.."

# command on PATH -> Debian package that provides it
declare -A APT=(
  [espeak-ng]=espeak-ng
  [ffmpeg]=ffmpeg
  [promtool]=prometheus
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [node]=nodejs
  [npm]=npm
)
missing=()
for cmd in "${!APT[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${APT[$cmd]}")
done
# `python3 -m venv` needs ensurepip, which Debian ships apart from python3.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup-system: installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm tools, pinned, installed into tests/node (git-ignored)
NPM_PACKAGES=(telegram-test-api@4.2.1)
if [ ! -f tests/node/.installed ] || [ "$(cat tests/node/.installed)" != "${NPM_PACKAGES[*]}" ]; then
  echo "setup-system: installing npm packages: ${NPM_PACKAGES[*]}" >&2
  npm install --silent --no-audit --no-fund --prefix tests/node "${NPM_PACKAGES[@]}" >/dev/null
  echo "${NPM_PACKAGES[*]}" > tests/node/.installed
fi
