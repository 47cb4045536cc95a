#!/bin/sh
# hearth's initramfs init. It loads the virtio modules, finds the shared
# read-only image and this VM's writable layer, joins them with overlayfs and
# switches to the image's init. Any failure prints one `hearth:` line that the
# host recognises, then powers off: it never hangs.

fail() {
    echo "$1"
    echo "hearth: power off"
    sync
    reboot -f
    sleep 10
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

# The guest has no clock device: take the host's time from the command
# line (seconds behind by the boot so far) before anything writes a file.
# The agent sets it precisely once it reaches the host.
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        hearth.time=*)
            t="${arg#hearth.time=}"
            read -r up _ < /proc/uptime
            up="${up%.*}"
            case "$t$up" in
                *[!0-9]*) ;;
                *) date -u -s "@$((t + up))" >/dev/null 2>&1 ;;
            esac
            ;;
    esac
done

while read -r name file; do
    insmod "/lib/modules/$file" || fail "hearth: missing module $name"
done < /etc/hearth/modules

# Disks appear asynchronously; give them up to 10 seconds.
layer=""
root=""
tries=0
while [ $tries -lt 100 ]; do
    layer=$(findfs LABEL=hearth-layer 2>/dev/null)
    root=$(findfs LABEL=hearth-root 2>/dev/null)
    if [ -z "$root" ] && [ -n "$layer" ]; then
        for dev in /sys/block/vd*; do
            [ -e "$dev" ] || continue
            [ "/dev/${dev##*/}" = "$layer" ] || root="/dev/${dev##*/}"
        done
    fi
    [ -n "$layer" ] && [ -n "$root" ] && break
    sleep 0.1
    tries=$((tries + 1))
done
[ -n "$root" ] || fail "hearth: root not mountable: no image disk appeared (is virtio_blk loaded and the image attached?)"
[ -n "$layer" ] || fail "hearth: root not mountable: no writable layer (ext4 labelled hearth-layer) appeared"

mount -t ext4 -o ro,noload "$root" /lower || fail "hearth: root not mountable: $root is not an ext4 image"
mount -t ext4 "$layer" /layer || fail "hearth: root not mountable: the writable layer $layer is not ext4"
mkdir -p /layer/upper /layer/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/layer/upper,workdir=/layer/work /newroot \
    || fail "hearth: root not mountable: overlayfs refused the image and the layer"

init=/sbin/init
for arg in $(cat /proc/cmdline); do
    case "$arg" in hearth.init=*) init="${arg#hearth.init=}" ;; esac
done
[ -e "/newroot$init" ] || [ -L "/newroot$init" ] || fail "hearth: root not mountable: the image has no $init"

for fs in dev proc sys; do
    mkdir -p "/newroot/$fs"
    mount --move "/$fs" "/newroot/$fs"
done
exec switch_root /newroot "$init"
