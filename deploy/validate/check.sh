#!/usr/bin/env bash
# Validates deploy/ offline (no Docker engine, no cluster needed):
#
#   1. kustomize build deploy/k8s and deploy/k8s/overlays/strimzi
#   2. compose-config deploy/compose.yaml (compose-go: the Compose schema,
#      interpolation, references)
#   3. hadolint deploy/Dockerfile
#   4. check_deploy.py on all of it: every Kubernetes object against the
#      Kubernetes schemas (strict; Strimzi custom resources, which have no
#      schema offline, get structural checks instead) and what schemas cannot
#      say (see its docstring)
#
# Tools come from install-tools.sh. Exits non-zero naming every problem.
# CYBERDAY_ENV_REPORT=FILE also writes the env names each of our containers
# sets, for tests/tests/deploy_manifests.rs to check against `--help`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
python="$venv/bin/python"
kustomize="$(go env GOPATH 2>/dev/null)/bin/kustomize"
compose_config="$venv/bin/compose-config"
hadolint="$venv/bin/hadolint"

die() { echo "check.sh: $*" >&2; exit 1; }

missing=()
[[ -x "$python" ]] && "$python" -c 'import kubernetes_validate, yaml' 2>/dev/null || missing+=("kubernetes-validate/PyYAML")
[[ -x "$kustomize" ]] || missing+=("kustomize")
[[ -x "$compose_config" ]] || missing+=("compose-config")
[[ -x "$hadolint" ]] || missing+=("hadolint")
((${#missing[@]} == 0)) ||
  die "missing tools: ${missing[*]}; install them with: bash deploy/validate/install-tools.sh"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
failed=0
step() { echo "check.sh: $*"; }
fail() { echo "check.sh: FAIL $*"; failed=1; }

step "kustomize build deploy/k8s"
"$kustomize" build "$root/deploy/k8s" >"$out/k8s.yaml" 2>"$out/k8s.err" ||
  { cat "$out/k8s.err"; die "kustomize build deploy/k8s failed"; }
step "kustomize build deploy/k8s/overlays/strimzi"
"$kustomize" build "$root/deploy/k8s/overlays/strimzi" >"$out/strimzi.yaml" 2>"$out/strimzi.err" ||
  { cat "$out/strimzi.err"; die "kustomize build deploy/k8s/overlays/strimzi failed"; }

step "compose-config deploy/compose.yaml"
"$compose_config" "$root/deploy/compose.yaml" >"$out/compose.json" ||
  die "deploy/compose.yaml is not a valid Compose file (see above)"

step "hadolint deploy/Dockerfile"
"$hadolint" --no-color "$root/deploy/Dockerfile" || fail "hadolint found problems in deploy/Dockerfile (above)"

step "check_deploy.py"
report_args=()
[[ -n "${CYBERDAY_ENV_REPORT:-}" ]] && report_args=(--env-report "$CYBERDAY_ENV_REPORT")
"$python" "$here/check_deploy.py" \
  --repo-root "$root" \
  --k8s "$out/k8s.yaml" \
  --k8s-strimzi "$out/strimzi.yaml" \
  --compose-model "$out/compose.json" \
  --compose-file "$root/deploy/compose.yaml" \
  --dockerfile "$root/deploy/Dockerfile" \
  --dockerignore "$root/.dockerignore" \
  "${report_args[@]}" || fail "check_deploy.py found problems (above)"

((failed == 0)) || die "deploy/ has problems; see the FAIL lines above"
echo "check.sh: deploy/ is valid (Kubernetes manifests, Strimzi overlay, compose.yaml, Dockerfile)"
