# Shared by scripts/run and scripts/test: Debian packages and the Rust toolchain,
# installed only when missing (idempotent), with sudo only when not root.

# Needed to build and run Hushphone.
RUN_PACKAGES="build-essential pkg-config cmake libclang-dev curl ca-certificates
  libasound2-dev libopus-dev libsqlite3-dev libbzrtp-dev libotr5-dev libvpx-dev libpipewire-0.3-dev
  libgl1-mesa-dri libegl1 libegl-mesa0 libxkbcommon-x11-0 libx11-xcb1 libxcursor1 libxi6 libxrandr2
  xvfb xauth openssl"
# Real servers and peers the tests talk to.
TEST_PACKAGES="prosody ejabberd kamailio kamailio-tls-modules linphone-cli baresip-core sip-tester microsocks
  qemu-system-x86 busybox-static dbus-daemon pipewire wireplumber xdg-desktop-portal"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
  missing=""
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing="$missing $p"
    fi
  done
  [ -z "$missing" ] && return 0
  echo "Installing Debian packages:$missing"
  # Keep the packages' system services (prosody, kamailio) from starting: the tests run
  # their own instances on free loopback ports.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  [ -n "$created_policy" ] && as_root rm -f /usr/sbin/policy-rc.d
  return 0
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "Installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

# A Debian kernel and its media modules, for the camera tests: they boot it under qemu
# with the V4L2 test driver (vivid) as a real /dev/video0, which this machine's own
# kernel may not have. Unpacked once into the cache; the tests find it by
# $HUSH_TEST_KERNEL.
ensure_test_kernel() {
  dir="${XDG_CACHE_HOME:-$HOME/.cache}/hushphone-kernel"
  export HUSH_TEST_KERNEL="$dir"
  [ -f "$dir/vmlinuz" ] && [ -d "$dir/modules" ] && return 0
  [ "$(dpkg --print-architecture)" = amd64 ] || { echo "The camera tests need an amd64 kernel"; return 1; }
  pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')"
  echo "Fetching $pkg for the camera tests"
  tmp="$(mktemp -d)"
  (cd "$tmp" && chmod 777 . &&
    { apt-get download -q "$pkg" >/dev/null 2>&1 ||
      { as_root apt-get update -qq && apt-get download -q "$pkg" >/dev/null; }; })
  dpkg-deb --fsys-tarfile "$tmp"/*.deb |
    tar -x -C "$tmp" --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/drivers/media/*'
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$tmp"/boot/vmlinuz-* "$dir/vmlinuz"
  mv "$tmp"/lib/modules/*/kernel/drivers/media "$dir/modules"
  rm -rf "$tmp"
}
