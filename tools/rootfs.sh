# Sourced by the scripts that debootstrap a root (tools/istio-models,
# deploy/docker/local-bases.sh).

# unmount_below DIR: unmounts every mount below DIR, deepest first.
# debootstrap mounts the host's /proc (and may mount /sys) inside the root
# while it installs; an interrupted run can leave them mounted, and a run was
# seen leaving /proc mounted. Call it before anything deletes the root:
# rm -rf must never walk into a host filesystem.
unmount_below() {
  awk -v root="$1/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r \
    | while read -r mount; do umount -l "$mount"; done
}
