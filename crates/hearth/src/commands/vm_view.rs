//! `hearth vm view ID`: a viewer link for the VM's screen (its URL, with
//! the key, printed once on stdout), or with `--list` the VM's links and
//! with `--revoke LINK` one revoked. The key is shown only by the command
//! that made it; it is never logged.

use std::io::Write;
use std::process::ExitCode;

use hearth_types::api::{CreateViewerLink, ViewerLink};
use hearth_types::{Timestamp, VmId};

use crate::cli::ApiArgs;
use crate::commands::client::Client;

/// What `hearth vm view` does.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Create { ttl_secs: Option<u64> },
    List,
    Revoke(String),
}

impl Action {
    pub fn of(ttl: Option<u64>, list: bool, revoke: Option<String>) -> Action {
        match (list, revoke) {
            (_, Some(link)) => Action::Revoke(link),
            (true, None) => Action::List,
            (false, None) => Action::Create { ttl_secs: ttl },
        }
    }
}

pub fn run(api: &ApiArgs, id: &VmId, action: Action, json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(api)?;
    let path = format!("/v1/vms/{id}/viewer-links");
    let text = match action {
        Action::Create { ttl_secs } => {
            let link: ViewerLink = client.post(&path, Some(&CreateViewerLink { ttl_secs }))?;
            match json {
                true => serde_json::to_string_pretty(&link)?,
                false => link.url.unwrap_or_default(),
            }
        }
        Action::List => {
            let links: Vec<ViewerLink> = client.get(&path)?;
            match json {
                true => serde_json::to_string_pretty(&links)?,
                false => table(&links, Timestamp::now()),
            }
        }
        Action::Revoke(link) => {
            let revoked: ViewerLink = client.delete(&format!("{path}/{link}"))?;
            match json {
                true => serde_json::to_string_pretty(&revoked)?,
                false => format!("revoked {}", revoked.id),
            }
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(ExitCode::SUCCESS)
}

/// ID, CREATED, EXPIRES and what the link does now.
fn table(links: &[ViewerLink], now: Timestamp) -> String {
    let mut out = format!("{:<13}  {:<24}  {:<24}  STATE", "ID", "CREATED", "EXPIRES");
    for l in links {
        let state = match l.revoked_at {
            Some(at) => format!("revoked {at}"),
            None if l.expires_at <= now => "expired".to_owned(),
            None => "valid".to_owned(),
        };
        let (created, expires) = (l.created_at.to_string(), l.expires_at.to_string());
        out.push_str(&format!(
            "\n{:<13}  {created:<24}  {expires:<24}  {state}",
            l.id
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: &str, expires: i64, revoked: Option<i64>) -> ViewerLink {
        ViewerLink {
            id: id.into(),
            vm: "vm-000000000001".parse().unwrap(),
            url: None,
            created_at: Timestamp::from_millis(0),
            expires_at: Timestamp::from_millis(expires),
            revoked_at: revoked.map(Timestamp::from_millis),
        }
    }

    #[test]
    fn the_table_says_what_each_link_does_now() {
        let links = [
            link("hvl_00000001", 10, None),
            link("hvl_00000002", 1000, None),
            link("hvl_00000003", 1000, Some(5)),
        ];
        let text = table(&links, Timestamp::from_millis(20));
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("hvl_00000001") && lines[1].ends_with("expired"),
            "{text}"
        );
        assert!(lines[2].ends_with("valid"), "{text}");
        assert!(lines[3].contains("revoked"), "{text}");
    }

    #[test]
    fn revoke_and_list_win_over_making_a_link() {
        assert_eq!(
            Action::of(None, false, None),
            Action::Create { ttl_secs: None }
        );
        assert_eq!(Action::of(None, true, None), Action::List);
        assert_eq!(
            Action::of(None, false, Some("hvl_1".into())),
            Action::Revoke("hvl_1".into())
        );
    }
}
