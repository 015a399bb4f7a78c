#!/bin/sh
# Installs Debian's Chromium for the browser test (`make test-browser`), if none is there.
# Playwright's own browser download is not used: it needs internet beyond the package
# registries. Needs root (or sudo) and apt-get; otherwise it says what to install.
set -eu

if [ -n "${CHROMIUM:-}" ] && command -v "$CHROMIUM" >/dev/null 2>&1; then
	echo "browser chosen by CHROMIUM: $CHROMIUM"
	exit 0
fi
for name in chromium chromium-browser google-chrome google-chrome-stable; do
	if command -v "$name" >/dev/null 2>&1; then
		echo "browser found: $(command -v "$name")"
		exit 0
	fi
done

if ! command -v apt-get >/dev/null 2>&1; then
	echo "no Chromium found and no apt-get to install it: install Chromium (or Chrome)" \
		"and put it on PATH, or set CHROMIUM=/path/to/chromium" >&2
	exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO="sudo -n"  # never waits for a password
	else
		echo "no Chromium found; installing it needs root: apt-get install -y chromium" >&2
		exit 1
	fi
fi
echo "installing Debian's chromium package ..."
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
command -v chromium
