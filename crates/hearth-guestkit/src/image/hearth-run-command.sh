#!/bin/sh
# hearth's command runner, shared by every image (busybox sh or dash).
#
# Prints `hearth: ready`, or, when the guest agent runs (the image has it
# and the VM has a channel for it: the virtio-serial port hearth.agent or
# vsock), waits for the agent to declare the guest ready instead
# (/run/hearth/ready; the agent prints the marker itself once every
# service's readiness check passed). If the kernel command line has
# hearth.argv=<base64>,<base64>,... (each the standard base64 of one
# argument), it runs exactly that command: no eval, no word splitting, no
# globbing. Then it prints `hearth: exit status N`, `hearth: power off`, and
# reboots, which makes the hypervisor exit. With no command it returns 0.
#
# No shell functions are defined here, so that a command cannot name one.

set -f
if { [ -x /usr/local/bin/hearth-agent ] || [ -x /bin/hearth-agent ]; } &&
    { grep -qsx hearth.agent /sys/class/virtio-ports/*/name || [ -c /dev/vsock ]; }; then
    waited=0
    while [ ! -e /run/hearth/ready ]; do
        if [ "$waited" -ge 600 ]; then
            echo "hearth: the agent did not declare the guest ready within 300 s" \
                "(a service's readiness check never passed: see hearth vm why);" \
                "running the command anyway"
            break
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
else
    echo "hearth: ready"
fi

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
