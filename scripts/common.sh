# Shared by the test scripts (source it): installing missing tools on a fresh machine.

# ensure_commands TOOL... — installs the Debian packages of the same names with apt-get
# when a command is missing (sudo only when not root), and fails if that did not help.
ensure_commands() {
  local missing=() tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "$(basename "$0"): ${missing[*]} not installed; installing with apt-get"
  local sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
  for tool in "${missing[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$(basename "$0"): installing $tool failed" >&2; exit 1; }
  done
}

# ensure_command_from COMMAND PACKAGE — like ensure_commands, for a command whose Debian
# package has another name (aarch64-linux-gnu-g++ from g++-aarch64-linux-gnu).
ensure_command_from() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "$(basename "$0"): $1 not installed; installing $2 with apt-get"
  local sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$2" >/dev/null
  command -v "$1" >/dev/null 2>&1 || { echo "$(basename "$0"): installing $2 did not provide $1" >&2; exit 1; }
}
