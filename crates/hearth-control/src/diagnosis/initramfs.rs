//! `missing_module` and `root_not_mountable`: hearth's initramfs says, with
//! its own `hearth:` markers, that it could not load a kernel module or
//! mount the image, then powers the guest off. The lines just before the
//! marker (insmod's or mount's complaint) say why.

use hearth_types::api::Finding;
use hearth_types::console::{classify, ConsoleEvent};

use super::{finding, Input};

/// Lines of context shown before the marker.
const CONTEXT: usize = 2;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    let log = &input.console;
    for (i, line) in log.lines().iter().enumerate() {
        let found = match classify(line) {
            Some(ConsoleEvent::MissingModule(name)) => missing_module(&name),
            Some(ConsoleEvent::RootNotMountable(why)) => root_not_mountable(&why),
            _ => continue,
        };
        let mut evidence = log.before(i, CONTEXT);
        evidence.push(line.clone());
        let (rule, cause, fix) = found;
        // The initramfs stops at its first failure: there is only one.
        return vec![finding(rule, cause, evidence, fix)];
    }
    Vec::new()
}

type Parts = (&'static str, String, String);

fn missing_module(name: &str) -> Parts {
    (
        "missing_module",
        format!(
            "hearth's initramfs could not load the kernel module {name}, so the guest cannot \
             reach its disks: the modules do not belong to the kernel that booted"
        ),
        "boot the kernel `hearth kernel fetch` stored (its modules come with it); with --kernel, \
         use a Debian cloud kernel whose modules are in the data directory, so that the \
         initramfs is built from that kernel's own modules"
            .to_owned(),
    )
}

fn root_not_mountable(why: &str) -> Parts {
    let fix = if why.contains("no image disk") {
        "the image disk never appeared: check that the image file exists (`hearth image list`) \
         and that virtio_blk loaded (the lines before the marker)"
    } else if why.contains("writable layer") {
        "the VM's writable layer is unusable: remove the layer template \
         (cache/layer-template-*.ext4 in the data directory) so it is made again, and retry"
    } else if why.contains("has no") {
        "the image has no init program: rebuild it with `hearth image build NAME --force`, \
         or, for your own image, put an executable init at the path named"
    } else {
        "the image file is not a usable ext4 image: rebuild it with \
         `hearth image build NAME --force`, or check the file given to --image"
    };
    (
        "root_not_mountable",
        format!("hearth's initramfs could not mount the image as the root file system: {why}"),
        fix.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{diagnose, Evidence};

    fn console(text: &str) -> Evidence {
        Evidence {
            console: text.into(),
            ..Evidence::default()
        }
    }

    #[test]
    fn a_missing_module_names_the_module_and_the_kernel_mismatch() {
        let found = diagnose(&console(
            "[    5.411796] Run /init as init process\n\
             insmod: can't insert '/lib/modules/virtio_blk.ko': invalid module format\n\
             [    5.612000] virtio_blk: disagrees about version of symbol module_layout\n\
             hearth: missing module virtio_blk\n\
             hearth: power off\n",
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, "missing_module");
        assert!(found[0].cause.contains("virtio_blk"));
        assert!(found[0]
            .evidence
            .iter()
            .any(|l| l.contains("invalid module format")));
        assert_eq!(
            found[0].evidence.last().unwrap(),
            "hearth: missing module virtio_blk"
        );
        assert!(found[0].fix.contains("hearth kernel fetch"));
    }

    #[test]
    fn an_unmountable_root_says_why_and_what_to_rebuild() {
        let found = diagnose(&console(
            "[    5.8] EXT4-fs (vda): VFS: Can't find ext4 filesystem\r\n\
             mount: mounting /dev/vda on /lower failed: Invalid argument\r\n\
             hearth: root not mountable: /dev/vda is not an ext4 image\r\n\
             hearth: power off\r\n",
        ));
        assert_eq!(found[0].rule, "root_not_mountable");
        assert!(found[0].cause.contains("/dev/vda is not an ext4 image"));
        assert!(found[0]
            .evidence
            .iter()
            .any(|l| l.contains("Can't find ext4")));
        assert!(found[0].fix.contains("hearth image build"));
    }
}
