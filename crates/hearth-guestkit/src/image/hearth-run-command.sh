#!/bin/sh
# hearth's command runner, shared by every image (busybox sh or dash).
#
# Prints `hearth: ready`. If the kernel command line has
# hearth.argv=<base64>,<base64>,... (each the standard base64 of one
# argument), it runs exactly that command: no eval, no word splitting, no
# globbing. Then it prints `hearth: exit status N`, `hearth: power off`, and
# reboots, which makes the hypervisor exit. With no command it returns 0.
#
# No shell functions are defined here, so that a command cannot name one.

set -f
echo "hearth: ready"

argv=
for word in $(cat /proc/cmdline); do
    case $word in
        hearth.argv=*) argv=${word#hearth.argv=} ;;
    esac
done
[ -n "$argv" ] || exit 0

# Replace each encoded word of "$@" by its decoded text, keeping the order.
# The trailing x keeps newlines at the end of an argument.
IFS=,
set -- $argv
unset IFS
count=$#
while [ "$count" -gt 0 ]; do
    if ! decoded=$(printf '%s' "$1" | base64 -d && echo x); then
        echo "hearth: hearth.argv is not valid base64: $1"
        echo "hearth: power off"
        sync
        reboot -f
        exit 1
    fi
    shift
    set -- "$@" "${decoded%x}"
    count=$((count - 1))
done

# A subshell, so that a builtin such as `exit 3` ends only the command.
("$@")
status=$?

# The marker must start a line even if the command's output did not end one.
echo
echo "hearth: exit status $status"
echo "hearth: power off"
sync
reboot -f
