//! `hearth session start|show|list|cancel|wait|providers`: login sessions
//! through the API. `start` prints the viewer link to open (its key is in
//! that answer only); `wait` follows a session to its end and exits by how
//! it ended.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use hearth_types::session::{ProviderInfo, Session, SessionEvent, StartSession};
use hearth_types::{SessionId, SessionState, Timestamp};

use crate::cli::ApiArgs;
use crate::commands::client::Client;

/// How often `wait` asks.
const POLL: Duration = Duration::from_secs(1);

pub fn start(
    api: &ApiArgs,
    user: &str,
    provider: &str,
    ttl_secs: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let body = StartSession {
        user: user.parse().context("--user")?,
        provider: provider.parse().context("--provider")?,
        ttl_secs,
    };
    let session: Session = Client::new(api)?.post("/v1/sessions", Some(&body))?;
    let text = match json {
        true => serde_json::to_string_pretty(&session)?,
        false => started(&session),
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn started(s: &Session) -> String {
    let url = s
        .viewer
        .as_ref()
        .and_then(|v| v.url.as_deref())
        .unwrap_or("");
    format!(
        "session {} ({} for {}) is {}; it expires at {}.\n\
         Open this link to log in (it is shown only now):\n{url}\n\
         Follow it with `hearth session wait {}`.",
        s.id, s.provider, s.user, s.state, s.expires_at, s.id
    )
}

pub fn show(api: &ApiArgs, id: &str, events: bool, json: bool) -> anyhow::Result<ExitCode> {
    let id: SessionId = id.parse()?;
    let client = Client::new(api)?;
    let session: Session = client.get(&format!("/v1/sessions/{id}"))?;
    let events: Vec<SessionEvent> = match events {
        true => client.get(&format!("/v1/sessions/{id}/events"))?,
        false => Vec::new(),
    };
    let text = match json {
        true if events.is_empty() => serde_json::to_string_pretty(&session)?,
        true => serde_json::to_string_pretty(
            &serde_json::json!({"session": session, "events": events}),
        )?,
        false => describe(&session, &events),
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn describe(s: &Session, events: &[SessionEvent]) -> String {
    let mut out = format!(
        "session {}\n  user      {}\n  provider  {}\n  state     {}\n  vm        {}\n  expires   {}",
        s.id,
        s.user,
        s.provider,
        s.state,
        s.vm.as_ref().map_or("-".to_owned(), |v| v.to_string()),
        s.expires_at
    );
    if let Some(m) = &s.message {
        out.push_str(&format!("\n  why       {m}"));
    }
    if let Some(v) = s.credential_version {
        out.push_str(&format!("\n  sealed    version {v}"));
    }
    for f in s.diagnosis.iter().flat_map(|d| &d.findings) {
        out.push_str(&format!(
            "\n  finding   {}: {} (fix: {})",
            f.rule, f.cause, f.fix
        ));
    }
    if !s.login_output.is_empty() {
        out.push_str("\n  login output:");
        for line in &s.login_output {
            out.push_str(&format!("\n    {line}"));
        }
    }
    for e in events {
        out.push_str(&format!(
            "\n  {}  {:<16}  {}",
            e.at,
            e.state.as_str(),
            e.message
        ));
    }
    out
}

pub fn list(api: &ApiArgs, json: bool) -> anyhow::Result<ExitCode> {
    let sessions: Vec<Session> = Client::new(api)?.get("/v1/sessions")?;
    let text = match json {
        true => serde_json::to_string_pretty(&sessions)?,
        false => table(&sessions),
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn table(sessions: &[Session]) -> String {
    let mut out = format!(
        "{:<16}  {:<20}  {:<10}  {:<16}  {:<15}  CREATED",
        "ID", "USER", "PROVIDER", "STATE", "VM"
    );
    for s in sessions {
        let vm = s.vm.as_ref().map_or("-".to_owned(), |v| v.to_string());
        out.push_str(&format!(
            "\n{:<16}  {:<20}  {:<10}  {:<16}  {vm:<15}  {}",
            s.id.as_str(),
            s.user.as_str(),
            s.provider.as_str(),
            s.state.as_str(),
            s.created_at
        ));
    }
    out
}

pub fn cancel(api: &ApiArgs, id: &str) -> anyhow::Result<ExitCode> {
    let id: SessionId = id.parse()?;
    let session: Session =
        Client::new(api)?.post(&format!("/v1/sessions/{id}/cancel"), None::<&()>)?;
    println!("session {} is {}", session.id, session.state);
    Ok(ExitCode::SUCCESS)
}

pub fn wait(api: &ApiArgs, id: &str, timeout: u64) -> anyhow::Result<ExitCode> {
    let id: SessionId = id.parse()?;
    let client = Client::new(api)?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut last = None;
    loop {
        let s: Session = client.get(&format!("/v1/sessions/{id}"))?;
        if last != Some(s.state) {
            eprintln!("{}  session {id} is {}", Timestamp::now(), s.state);
            last = Some(s.state);
        }
        if !s.state.is_live() {
            return Ok(ended(&s));
        }
        if Instant::now() >= deadline {
            eprintln!(
                "gave up after {timeout} s: session {id} is still {}",
                s.state
            );
            return Ok(ExitCode::from(3));
        }
        std::thread::sleep(POLL);
    }
}

fn ended(s: &Session) -> ExitCode {
    let mut out = std::io::stdout().lock();
    if s.state == SessionState::Completed {
        let version = s
            .credential_version
            .map_or("?".to_owned(), |v| v.to_string());
        let _ = writeln!(
            out,
            "completed: the {} credential of {} is sealed (version {version})",
            s.provider, s.user
        );
        return ExitCode::SUCCESS;
    }
    let why = s.message.as_deref().unwrap_or("no reason recorded");
    let _ = writeln!(out, "{}: {why}", s.state);
    ExitCode::from(1)
}

pub fn providers(api: &ApiArgs, json: bool) -> anyhow::Result<ExitCode> {
    let providers: Vec<ProviderInfo> = Client::new(api)?.get("/v1/providers")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&providers)?);
        return Ok(ExitCode::SUCCESS);
    }
    for p in &providers {
        println!(
            "{:<10}  {}  (image {}, files {})",
            p.name.as_str(),
            p.description,
            p.image,
            p.files.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
