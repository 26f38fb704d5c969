# shellcheck shell=bash
# Shared settings for scripts/*: sourced, not executed.
#
# Sets REPO_ROOT, points podman at the project's containers.conf and puts the
# project venv first on PATH.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export REPO_ROOT

# The instance image every Molecule scenario and the demo use.
OCSP_INSTANCE_IMAGE="${OCSP_INSTANCE_IMAGE:-localhost/ocsp-debian12:latest}"
export OCSP_INSTANCE_IMAGE

# Podman reads only this file when CONTAINERS_CONF is set: runc and ulimits
# that work on the CI host kind, without editing /etc/containers/.
export CONTAINERS_CONF="${CONTAINERS_CONF:-$REPO_ROOT/molecule/containers.conf}"

# The venv (made by scripts/bootstrap, maybe later in the same run) first.
export PATH="$REPO_ROOT/.venv/bin:$PATH"
export VIRTUAL_ENV="$REPO_ROOT/.venv"

# Ansible and Molecule: no colour codes in logs when not on a terminal.
if [[ ! -t 1 ]]; then
    export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 NO_COLOR=1 PY_COLORS=0
fi

log() {
    printf '%s %s\n' "[$(date +%H:%M:%S)] ${0##*/}:" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

need_root() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (podman instances are privileged, apt and debootstrap need root)"
}
