# Sourced by the installers that build something once per machine and version
# into a cache outside any clone (tools/vllm, tools/istio-models,
# tools/crd-check), so that clones and CI runs share one build.

# The installers' cache.
cache="${XDG_CACHE_HOME:-$HOME/.cache}/llm-gateway"

# install_once TARGET DONE: exits when DONE (a file) exists, the build of
# TARGET having finished. Otherwise waits for any other installer of TARGET
# (parallel test runs) and exits if that one finished it; returns holding
# the lock, and the caller builds TARGET and makes DONE last, so an
# interrupted build is redone.
install_once() {
  [ -e "$2" ] && exit 0
  mkdir -p "$(dirname "$1")"
  exec 9>"$1.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  [ -e "$2" ] && exit 0
  return 0
}
