#!/usr/bin/env bash
# Installs the system tools the test suites drive for real, when they are missing:
# Debian packages (audio synthesis and encoding, promtool, headless Chromium) and the npm
# Telegram Bot API emulator. Idempotent; tests/run.sh calls it before the suites.
set -euo pipefail
cd "$(dirname "$0")/.."

# command on PATH -> Debian package that provides it
declare -A APT=(
  [espeak-ng]=espeak-ng
  [ffmpeg]=ffmpeg
  [promtool]=prometheus
  [chromium]=chromium
  [chromedriver]=chromium-driver
)
missing=()
for cmd in "${!APT[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${APT[$cmd]}")
done
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
