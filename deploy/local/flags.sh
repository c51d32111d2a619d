# Sourced by run.sh and bench/run.sh: reads a yes/no environment setting.
#
#   if env_flag KEEP_KAFKA "leave the cluster running"; then ...
#
# 1, yes and true are yes; 0, no, false and unset are no; anything else
# stops the script with a message saying what to write.
env_flag() { # env_flag NAME WHAT_YES_DOES
  local value="${!1:-0}"
  case "${value,,}" in
    1 | yes | true) return 0 ;;
    0 | no | false | "") return 1 ;;
  esac
  echo "$(basename "$0"): $1 is '$value'; use $1=1 to $2, or $1=0 (the default) not to" >&2
  exit 2
}
