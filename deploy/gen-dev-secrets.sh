#!/usr/bin/env bash
# Creates the secrets docker-compose.yml mounts, under deploy/secrets/
# (git-ignored), or under DIR (compose: GATEWAY_SECRETS_DIR=DIR). Existing
# files are kept; delete one to regenerate it.
#
#   deploy/gen-dev-secrets.sh [DIR]
#
#   secrets/cache_secret          llm-policy's cache-salt secret (32 random bytes, hex)
#   secrets/ratelimit.env         ADMIN_TOKEN=... for ratelimit-service's admin API
#   secrets/tls/tls.{crt,key}     server certificate of the :8443 mTLS listener
#   secrets/tls/client-ca.crt     CA that client certificates must chain to
#   secrets/tls/client.{crt,key}  a client certificate for tenant "partner"
#                                 (URI SAN spiffe://example.org/ns/partner/sa/client)
#
# These are for trying the stack on one machine. In production the TLS
# material comes from your PKI, and the secrets from your secret manager.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
secrets=${1:-secrets}
umask 077
mkdir -p "$secrets/tls"
chmod 700 "$secrets"

if [[ ! -s $secrets/cache_secret ]]; then
  openssl rand -hex 32 >"$secrets/cache_secret"
  echo "wrote $secrets/cache_secret"
fi
if [[ ! -s $secrets/ratelimit.env ]]; then
  echo "ADMIN_TOKEN=$(openssl rand -hex 24)" >"$secrets/ratelimit.env"
  echo "wrote $secrets/ratelimit.env"
fi

tls=$secrets/tls
if [[ ! -s $tls/tls.crt ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
  key "$work/ca.key"
  openssl req -x509 -new -key "$work/ca.key" -days 365 -subj "/CN=llm-gateway dev CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -out "$tls/client-ca.crt"
  issue() { # name subject extensions
    key "$tls/$1.key"
    openssl req -new -key "$tls/$1.key" -subj "$2" -out "$work/$1.csr"
    printf '%b' "$3" >"$work/$1.ext"
    openssl x509 -req -in "$work/$1.csr" -CA "$tls/client-ca.crt" -CAkey "$work/ca.key" \
      -CAserial "$work/ca.srl" -CAcreateserial -days 365 -extfile "$work/$1.ext" -out "$tls/$1.crt" 2>/dev/null
  }
  issue tls "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
  issue client "/CN=partner" "subjectAltName=URI:spiffe://example.org/ns/partner/sa/client\nextendedKeyUsage=clientAuth\n"
  echo "wrote $tls/{tls.crt,tls.key,client-ca.crt,client.crt,client.key} (dev CA; its key is discarded)"
fi

# Containers run as other uids (envoy 101, ratelimit-service and ecds-render
# 65532) and read these through bind mounts; the directory (0700) is what
# keeps other host users out. The server key is readable by Envoy's group
# only where this script may hand it to gid 101 (as root); elsewhere it has
# to be world-readable for the container to read it. The dev client's key is
# the client's: it stays 0600 and is never mounted.
chmod 644 "$secrets/cache_secret" "$secrets/ratelimit.env" "$tls"/*.crt
chmod 600 "$tls/client.key"
if chgrp 101 "$tls/tls.key" 2>/dev/null; then
  chmod 640 "$tls/tls.key"
else
  chmod 644 "$tls/tls.key"
  echo "note: $tls/tls.key is 0644 (chgrp 101 needs root); Envoy runs as uid 101" >&2
fi
chmod 755 "$tls"
