//! How the host hands a command to the guest: `hearth.argv=` on the kernel
//! command line, one standard-base64 word per argument, joined by commas.
//!
//! Base64 never contains commas or spaces, so the guest's shell splits the
//! value safely and decodes every argument back to the exact bytes the user
//! typed; nothing is ever evaluated. The guest side is
//! `hearth-run-command.sh`, installed in every image.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::ImageError;

/// The kernel command-line parameter carrying the command.
pub const ARGV_PARAM: &str = "hearth.argv=";

/// The longest `hearth.argv=...` we emit. The x86 kernel command line holds
/// 2047 bytes, and the console, panic and tsc settings need room too.
pub const MAX_ARGV_PARAM_LEN: usize = 1500;

/// `Some("hearth.argv=<b64>,<b64>,...")` for a command, `None` when `argv`
/// is empty (the guest then stays up with no command).
pub fn cmdline_arg(argv: &[String]) -> Result<Option<String>, ImageError> {
    if argv.is_empty() {
        return Ok(None);
    }
    if let Some(index) = argv.iter().position(String::is_empty) {
        return Err(ImageError::EmptyArgument { index });
    }
    let words: Vec<String> = argv.iter().map(|a| STANDARD.encode(a)).collect();
    let param = format!("{ARGV_PARAM}{}", words.join(","));
    if param.len() > MAX_ARGV_PARAM_LEN {
        return Err(ImageError::CommandTooLong {
            len: param.len(),
            max: MAX_ARGV_PARAM_LEN,
        });
    }
    Ok(Some(param))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// What the guest script does: split on commas, decode each word.
    fn decode(param: &str) -> Vec<String> {
        let value = param.strip_prefix(ARGV_PARAM).expect("prefix");
        value
            .split(',')
            .map(|w| String::from_utf8(STANDARD.decode(w).unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn no_command_gives_no_parameter() {
        assert_eq!(cmdline_arg(&[]).unwrap(), None);
    }

    #[test]
    fn simple_command_is_encoded_per_argument() {
        let param = cmdline_arg(&args(&["echo", "hi"])).unwrap().unwrap();
        assert_eq!(param, "hearth.argv=ZWNobw==,aGk=");
    }

    #[test]
    fn awkward_arguments_round_trip_exactly() {
        let argv = args(&[
            "sh",
            "-c",
            "echo \"$HOME\" *; exit 3",
            "a,b c",
            "trailing newline\n",
            "ünïcødé ✓",
            "hearth.argv=evil",
        ]);
        let param = cmdline_arg(&argv).unwrap().unwrap();
        assert!(!param.contains(' '), "{param}");
        assert_eq!(decode(&param), argv);
    }

    #[test]
    fn empty_argument_is_refused_with_its_position() {
        let err = cmdline_arg(&args(&["true", ""])).unwrap_err();
        assert!(matches!(err, ImageError::EmptyArgument { index: 1 }));
        assert!(err.to_string().contains("argument 1"), "{err}");
    }

    #[test]
    fn overlong_command_is_refused() {
        let err = cmdline_arg(&args(&["echo", &"x".repeat(2000)])).unwrap_err();
        assert!(matches!(err, ImageError::CommandTooLong { max: 1500, .. }));
        let fits = cmdline_arg(&args(&["echo", &"x".repeat(1000)])).unwrap();
        assert!(fits.unwrap().len() <= MAX_ARGV_PARAM_LEN);
    }
}
