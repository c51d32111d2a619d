# Sourced by run.sh and test.sh: makes sure the tools the project needs are
# here, installing Debian packages when running as root (as CI does), and
# otherwise saying exactly what to install.

apt_install() { # apt_install DEBIAN_PACKAGE WHAT_FOR: only as root, with apt-get
  [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || return 0
  echo "prereqs: installing $1 ($2)" >&2
  if [[ -z "${_apt_updated:-}" ]]; then apt-get update -qq >/dev/null && _apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

need_cmd() { # need_cmd COMMAND DEBIAN_PACKAGE WHAT_FOR
  command -v "$1" >/dev/null 2>&1 && return 0
  apt_install "$2" "$3"
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "prereqs: '$1' is missing ($3). Install it with: apt-get install -y $2" >&2
  exit 1
}

need_file() { # need_file PATH DEBIAN_PACKAGE WHAT_FOR
  [[ -e "$1" ]] && return 0
  apt_install "$2" "$3"
  [[ -e "$1" ]] && return 0
  echo "prereqs: $1 is missing ($3). Install it with: apt-get install -y $2" >&2
  exit 1
}

need_cmd java openjdk-17-jre-headless "runs the Kafka brokers"
need_cmd mvn maven "fetches Kafka's jars from Maven Central, once"
need_cmd cc build-essential "builds librdkafka"
need_cmd make build-essential "builds librdkafka"
need_cmd chromium chromium "headless browser of the live page's test (tests/tests/live_view.rs)"
need_cmd pkg-config pkg-config "finds OpenSSL for librdkafka"
need_cmd openssl openssl "makes the throw-away certificates (deploy/local/certs.sh)"
# librdkafka is built with TLS (SASL_SSL): it needs OpenSSL's headers.
need_file /usr/include/openssl/ssl.h libssl-dev "builds librdkafka with TLS for SASL_SSL"
command -v cargo >/dev/null 2>&1 || {
  echo "prereqs: 'cargo' is missing. Install Rust with rustup (https://rustup.rs), then run this again." >&2
  exit 1
}

# Tools from the Go module proxy, built once into $(go env GOPATH)/bin.
if command -v go >/dev/null 2>&1; then
  export PATH="$PATH:$(go env GOPATH)/bin"
fi
go_tool() { # go_tool COMMAND PACKAGE VERSION WHAT_FOR
  command -v "$1" >/dev/null 2>&1 && return 0
  command -v go >/dev/null 2>&1 || {
    echo "prereqs: '$1' is missing ($4) and Go is not installed to build it. Install Go (apt-get install -y golang), then: go install $2@$3" >&2
    exit 1
  }
  echo "prereqs: installing $1 $3 ($4; go install, once)" >&2
  go install "$2@$3"
}

go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl v1.9.3 "the operator's gRPC client, used by the tests"
go_tool mailpit github.com/axllent/mailpit v1.33.1 "the local SMTP server the delivery service sends to, and its tests"
