//! Readiness checks: a TCP connect, an HTTP GET answered 2xx or 3xx (a tiny
//! HTTP/1.0 client: the agent has no HTTP library), or a command exiting 0.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_types::guest::Readiness;

use crate::reaper::reaper;

/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// True when the check passes now.
pub fn passes(check: &Readiness, env: &[(String, String)]) -> bool {
    match check {
        Readiness::Tcp { port } => connect(*port).is_some(),
        Readiness::Http { port, path } => http_ok(*port, path),
        Readiness::Command { argv } => command_ok(argv, env),
    }
}

fn connect(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, CHECK_TIMEOUT).ok()
}

fn http_ok(port: u16, path: &str) -> bool {
    let Some(mut s) = connect(port) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(CHECK_TIMEOUT));
    let _ = s.set_write_timeout(Some(CHECK_TIMEOUT));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
        if head[..n].contains(&b'\n') {
            break;
        }
    }
    status_is_ok(&head[..n])
}

/// `HTTP/1.x 2xx ...` or `3xx`.
fn status_is_ok(head: &[u8]) -> bool {
    let line = String::from_utf8_lossy(head);
    let mut words = line.split_whitespace();
    let proto_ok = words.next().is_some_and(|p| p.starts_with("HTTP/"));
    let code = words.next().and_then(|c| c.parse::<u16>().ok());
    proto_ok && code.is_some_and(|c| (200..400).contains(&c))
}

fn command_ok(argv: &[String], env: &[(String, String)]) -> bool {
    let Some((program, args)) = argv.split_first() else {
        return false;
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let Ok(child) = reaper().spawn(&mut cmd) else {
        return false;
    };
    match reaper().wait(child.id(), Some(Instant::now() + CHECK_TIMEOUT)) {
        Some(status) => status.success(),
        None => {
            // SAFETY: kill(2) of the check's own process group.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            reaper().wait(child.id(), None);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn serve_once(answer: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /health HTTP/1.0\r\n"));
            s.write_all(answer.as_bytes()).unwrap();
        });
        port
    }

    fn http(port: u16) -> Readiness {
        Readiness::Http {
            port,
            path: "/health".into(),
        }
    }

    #[test]
    fn http_needs_a_2xx_or_3xx_answer() {
        assert!(passes(&http(serve_once("HTTP/1.1 200 OK\r\n\r\n")), &[]));
        assert!(passes(&http(serve_once("HTTP/1.0 302 Found\r\n\r\n")), &[]));
        assert!(!passes(&http(serve_once("HTTP/1.1 503 Nope\r\n\r\n")), &[]));
        assert!(!passes(&http(serve_once("garbage\r\n")), &[]));
    }

    #[test]
    fn tcp_needs_a_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(passes(&Readiness::Tcp { port }, &[]));
        drop(l);
        assert!(!passes(&Readiness::Tcp { port }, &[]));
    }

    #[test]
    fn a_command_must_exit_zero_and_sees_the_env() {
        let check = |script: &str| Readiness::Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
        };
        let env = [("WANT".to_string(), "yes".to_string())];
        assert!(passes(&check("test \"$WANT\" = yes"), &env));
        assert!(!passes(&check("exit 1"), &env));
        assert!(!passes(
            &Readiness::Command {
                argv: vec!["/nonexistent".into()]
            },
            &env
        ));
    }
}
