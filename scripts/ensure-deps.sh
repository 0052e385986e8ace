#!/usr/bin/env bash
# Installs what Hyperseal needs and is missing, and nothing else: Debian packages (when
# run as root on Debian/Ubuntu) and the npm packages pinned by package-lock.json.
# Idempotent and quiet when everything is already there, so `npm test` and `npm run up`
# can call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the product and its tests use. python3-pykmip: the reference KMIP peer
# the interoperability tests run against; openssl: `openssl speed` baselines in bench/;
# postgresql: the server the store tests run their one suite against besides SQLite
# (test/support/postgres.ts starts a throwaway cluster with its initdb and pg_ctl);
# qemu-system-x86, qemu-utils, ovmf: the hypervisor, qemu-img and UEFI firmware the agent
# runs VMs with (software emulation when /dev/kvm is unusable); rsyslog, rsyslog-gnutls:
# the real syslog collector the syslog sink's tests and bench/events run against (gnutls
# is rsyslog's TLS stream driver, packaged apart); gcc, binutils, gnu-efi, sbsigntool,
# dosfstools, mtools: the Secure Boot tests build a small EFI application, sign it and put
# it on a FAT disk that OVMF boots (test/support/efi.ts); efitools: their independent
# check of our EFI_SIGNATURE_LIST bytes and of image hashes; swtpm, swtpm-tools: the
# agent's per-VM vTPM 2.0 (swtpm_setup creates its state); chromium, fonts-dejavu-core: the
# headless browser the web UI's end-to-end tests drive (through playwright-core), and a font
# for its screenshots.
APT_PACKAGES=(python3-pykmip openssl postgresql qemu-system-x86 qemu-utils ovmf rsyslog rsyslog-gnutls
  gcc binutils gnu-efi sbsigntool dosfstools mtools efitools swtpm swtpm-tools chromium fonts-dejavu-core)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "hyperseal: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "hyperseal: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

# npm packages: install from the lockfile when node_modules is absent or older than it.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "hyperseal: installing npm packages from package-lock.json" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
