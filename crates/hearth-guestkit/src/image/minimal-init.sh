#!/bin/sh
# /sbin/init of hearth's minimal image when it has no agent: busybox sh as
# PID 1. (An image with the agent has the agent itself as /sbin/init: see
# docs/agent.md.)
#
# It mounts what the initramfs did not already move into this root, then
# hands over to /usr/lib/hearth/run-command, which prints `hearth: ready`
# and, when the host asked for a command, runs it and powers off. With no
# command the guest stays up until the host stops it. PID 1 must never exit
# (that is a kernel panic), so any unexpected end of this script reboots.

trap 'echo "hearth: power off"; sync; reboot -f' EXIT

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

# busybox-static has no mountpoint applet; /proc/mounts says it all.
mounted() {
    [ -r /proc/mounts ] && grep -q "^[^ ]* $1 " /proc/mounts
}

mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mounted /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
mounted /run || mount -t tmpfs -o mode=0755 tmpfs /run
if [ -c /dev/console ]; then
    exec </dev/console >/dev/console 2>&1
fi
hostname -F /etc/hostname
cd /root || cd /

/bin/sh /usr/lib/hearth/run-command

# No command was given: stay up, reaping orphans, until the host stops us.
while :; do
    sleep 3600
done
