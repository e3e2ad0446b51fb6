#!/usr/bin/env bash
# Installs Xvfb and the X/GL libraries Qt6 (PyQt6) and napari's vispy canvas need to run under a virtual display.
# Idempotent and quiet: does nothing when everything is already present. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  xvfb xauth
  libxkbcommon-x11-0 libxkbcommon0
  libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
  libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libxcb-xkb1 libx11-xcb1
  libegl1 libgl1 libglx-mesa0 libgl1-mesa-dri libopengl0
  libglib2.0-0 libfontconfig1 libfreetype6 libdbus-1-3
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# Package names differ across Debian/Ubuntu releases (e.g. libglib2.0-0t64): install what this release offers.
available=()
for pkg in "${missing[@]}"; do
  if apt-cache show "$pkg" >/dev/null 2>&1; then
    available+=("$pkg")
  elif apt-cache show "${pkg}t64" >/dev/null 2>&1; then
    available+=("${pkg}t64")
  else
    echo "xvfb-deps: $pkg is not offered by this release; skipped" >&2
  fi
done
$SUDO apt-get install -y -qq --no-install-recommends "${available[@]}" >/dev/null
