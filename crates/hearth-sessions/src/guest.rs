//! What a session's browser VM is told: the provider's image, the proxy
//! settings every program reads (the agent's egress proxy on the guest's
//! loopback), the provider's setup files, and the login command as one
//! more service, started once the browser is up. No secret goes in: the
//! credential only ever comes out.

use hearth_types::api::CreateVm;
use hearth_types::guest::{EnvVar, GuestConfig, GuestFile, RestartPolicy, ServiceSpec};

use crate::providers::{BrowserOpener, Provider};

/// The guest loopback port of the agent's egress proxy.
pub const PROXY_PORT: u16 = 3128;
/// The login command's service name (its output is the session's
/// `login_output`).
pub const LOGIN_SERVICE: &str = "login";
/// The browser image's browser, for `$BROWSER`.
const BROWSER: &str = "/usr/local/bin/hearth-browser";

/// The VM to create for a login with `provider`.
pub fn browser_vm(provider: &Provider, readiness_timeout_secs: u64) -> CreateVm {
    CreateVm {
        image: provider.image.clone(),
        readiness_timeout_secs: Some(readiness_timeout_secs),
        config: GuestConfig {
            hostname: Some("login".to_owned()),
            env: proxy_env(),
            files: setup_files(provider),
            services: vec![login_service(provider)],
            network: None,
        },
        ..CreateVm::default()
    }
}

/// Both spellings: curl and Python read the lowercase ones, Node tools and
/// Go the uppercase; Chromium reads them when no desktop settings say
/// otherwise. Loopback stays direct: the tool's callback is there.
pub(crate) fn proxy_env() -> Vec<EnvVar> {
    let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
    let direct = "127.0.0.1,localhost,::1".to_owned();
    [
        ("http_proxy", proxy.clone()),
        ("https_proxy", proxy.clone()),
        ("HTTP_PROXY", proxy.clone()),
        ("HTTPS_PROXY", proxy),
        ("no_proxy", direct.clone()),
        ("NO_PROXY", direct),
    ]
    .into_iter()
    .map(|(name, value)| EnvVar {
        name: name.to_owned(),
        value,
    })
    .collect()
}

fn setup_files(provider: &Provider) -> Vec<GuestFile> {
    let home = provider.home();
    provider
        .setup_files
        .iter()
        .map(|f| GuestFile {
            path: format!("{home}/{}", f.path),
            content: f.content.clone(),
            mode: f.mode,
            owner: Some(provider.user.clone()),
        })
        .collect()
}

/// The login command, run once as the provider's user with its
/// environment; `env -u` removes what the provider says must not be set.
fn login_service(provider: &Provider) -> ServiceSpec {
    let mut argv = Vec::new();
    if !provider.unset_env.is_empty() {
        argv.push("env".to_owned());
        for name in &provider.unset_env {
            argv.extend(["-u".to_owned(), name.clone()]);
        }
        argv.push("--".to_owned());
    }
    argv.extend(provider.login.iter().cloned());
    let mut env = vec![
        var("HOME", &provider.home()),
        var("USER", &provider.user),
        var("DISPLAY", ":0"),
    ];
    if provider.opens_browser_with == BrowserOpener::BrowserEnv {
        env.push(var("BROWSER", BROWSER));
    }
    env.extend(provider.env.iter().map(|(k, v)| var(k, v)));
    ServiceSpec {
        name: LOGIN_SERVICE.to_owned(),
        argv,
        env,
        user: Some(provider.user.clone()),
        restart: RestartPolicy::Never,
        readiness: None,
        crash_loop: Default::default(),
        after: provider.login_after.clone(),
    }
}

fn var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Catalogue;

    #[test]
    fn the_login_runs_after_the_browser_with_the_proxy_and_without_what_the_provider_unsets() {
        let catalogue = Catalogue::builtin();
        let gemini = catalogue.get(&"gemini".parse().unwrap()).unwrap();
        let vm = browser_vm(gemini, 300);
        vm.config.check().unwrap();
        assert_eq!(vm.image, "login");
        let login = &vm.config.services[0];
        assert_eq!(login.after, ["browser"]);
        assert_eq!(login.user.as_deref(), Some("hearth"));
        assert_eq!(&login.argv[..3], ["env", "-u", "CI"]);
        assert!(login.argv.contains(&"--".to_owned()));
        assert!(vm
            .config
            .env
            .iter()
            .any(|v| v.name == "HTTPS_PROXY" && v.value == "http://127.0.0.1:3128"));
        let settings = &vm.config.files[0];
        assert_eq!(settings.path, "/home/hearth/.gemini/settings.json");
        assert_eq!(settings.owner.as_deref(), Some("hearth"));
        // xdg-open tools get no $BROWSER of hearth's; $BROWSER ones do.
        assert!(!login.env.iter().any(|v| v.name == "BROWSER"));
        let codex = catalogue.get(&"codex".parse().unwrap()).unwrap();
        let login = &browser_vm(codex, 300).config.services[0];
        assert_eq!(login.argv, ["codex", "login"]);
        assert!(login
            .env
            .iter()
            .any(|v| v.name == "BROWSER" && v.value == BROWSER));
    }
}
