#!/usr/bin/env bash
# Throw-away certificates for mutual TLS between the master and its workers,
# and for a local Kafka cluster's SASL_SSL listener. Never for production:
# the keys are unencrypted files next to the certificates (except the Kafka
# broker's, which Kafka insists on reading encrypted).
#
#   deploy/local/certs.sh [DIR]     default DIR: deploy/local/.certs (git-ignored)
#
# Makes, in DIR (existing files are kept; delete DIR to start over):
#   ca.pem, ca.key                   the CA every process trusts
#   master.pem, master.key           server: 127.0.0.1, localhost, cyberday-master and master
#                                    (each + .cyberday, .cyberday.svc, .cyberday.svc.cluster.local)
#   worker.pem, worker.key           client certificate of a worker (CN worker)
#   rogue-ca.pem, rogue-worker.pem, rogue-worker.key
#                                    a second CA and a worker it signed: must be refused
#   kafka-broker.pem, .key           the brokers' certificate (127.0.0.1, localhost)
#   kafka-broker.keystore.pem        their PEM keystore (encrypted PKCS#8 key + certificate),
#   kafka-broker.password            its key's password (ssl.key.password)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${1:-$here/.certs}"
days=365

command -v openssl >/dev/null 2>&1 || {
  echo "certs.sh: 'openssl' is missing. Install it with: apt-get install -y openssl" >&2
  exit 1
}
mkdir -p "$dir"
chmod 700 "$dir"
cd "$dir"

key() { # key NAME: an unencrypted P-256 key in PKCS#8
  [[ -f "$1.key" ]] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
  chmod 600 "$1.key"
}

ca() { # ca NAME COMMON_NAME
  [[ -f "$1.pem" ]] && return
  key "$1"
  openssl req -x509 -new -key "$1.key" -sha256 -days "$days" -subj "/O=cyberday-notifier/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.pem" 2>/dev/null
}

leaf() { # leaf NAME CA COMMON_NAME serverAuth|clientAuth [SAN]
  [[ -f "$1.pem" ]] && return
  key "$1"
  local ext
  ext="$(mktemp)"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$4"
    [[ -n "${5:-}" ]] && echo "subjectAltName=$5"
  } >"$ext"
  openssl req -new -key "$1.key" -subj "/O=cyberday-notifier/CN=$3" 2>/dev/null |
    openssl x509 -req -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -sha256 -days "$days" \
      -extfile "$ext" -out "$1.pem" 2>/dev/null
  rm -f "$ext"
}

# The master's names: loopback, and the Service in namespace cyberday, as
# deploy/k8s names it (master) and as cyberday-master.
names="IP:127.0.0.1,DNS:localhost"
for service in cyberday-master master; do
  for suffix in "" .cyberday .cyberday.svc .cyberday.svc.cluster.local; do names+=",DNS:$service$suffix"; done
done
ca ca "cyberday-notifier test CA"
leaf master ca cyberday-master serverAuth "$names"
leaf worker ca worker clientAuth
ca rogue-ca "rogue CA"
leaf rogue-worker rogue-ca worker clientAuth

# Kafka reads a PEM keystore file only with an encrypted key.
leaf kafka-broker ca localhost serverAuth "IP:127.0.0.1,DNS:localhost"
if [[ ! -f kafka-broker.password ]]; then
  (umask 077 && openssl rand -hex 16 >kafka-broker.password)
  rm -f kafka-broker.keystore.pem
fi
if [[ ! -f kafka-broker.keystore.pem ]]; then
  (
    umask 077
    # PBES1 (SHA1 + 3DES): Java 17 has no SecretKeyFactory for PBES2.
    openssl pkcs8 -topk8 -v1 PBE-SHA1-3DES -in kafka-broker.key \
      -passout file:kafka-broker.password
    cat kafka-broker.pem
  ) >kafka-broker.keystore.pem
fi
echo "certs.sh: certificates in $dir" >&2
