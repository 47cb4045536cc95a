//! What the fake provider accepts: the parameters of an authorization
//! request and of a token request, checked the way a strict provider
//! checks them (RFC 6749 with PKCE, RFC 7636, and RFC 8252's loopback
//! redirects for native apps). Pure functions, so every refusal is tested
//! without a socket.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Form or query parameters, each name at most once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

/// A parameter that is missing, given twice or not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// The parameter's name.
    pub param: &'static str,
    /// What is wrong with it, for the page or the JSON error.
    pub problem: String,
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "parameter `{}`: {}", self.param, self.problem)
    }
}

impl Params {
    /// `application/x-www-form-urlencoded` text (a query or a form body).
    /// A name given twice is refused, as RFC 6749 3.1 asks.
    pub fn parse(text: &[u8]) -> Result<Params, String> {
        let mut out = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(text) {
            if out.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(format!("parameter `{name}` is given more than once"));
            }
        }
        Ok(Params(out))
    }

    /// The value of `name`, which must be there and not empty.
    pub fn required(&self, name: &'static str) -> Result<&str, ParamError> {
        match self.0.get(name).map(String::as_str) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ParamError {
                param: name,
                problem: "missing".to_owned(),
            }),
        }
    }
}

/// The fields of an authorization request that the approval carries on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub state: String,
}

impl AuthorizeRequest {
    /// `response_type=code`, a client id, a loopback `redirect_uri`, an
    /// S256 `code_challenge` and a `state`. Other parameters (`scope` and
    /// the provider's own extras) are accepted and ignored.
    pub fn parse(params: &Params) -> Result<AuthorizeRequest, ParamError> {
        let response_type = params.required("response_type")?;
        if response_type != "code" {
            return Err(bad("response_type", "only `code` is supported"));
        }
        let method = params.required("code_challenge_method")?;
        if method != "S256" {
            return Err(bad("code_challenge_method", "only `S256` is supported"));
        }
        let request = AuthorizeRequest {
            client_id: printable("client_id", params.required("client_id")?)?,
            redirect_uri: params.required("redirect_uri")?.to_owned(),
            code_challenge: params.required("code_challenge")?.to_owned(),
            state: printable("state", params.required("state")?)?,
        };
        check_loopback_redirect(&request.redirect_uri)?;
        check_pkce_text("code_challenge", &request.code_challenge)?;
        Ok(request)
    }

    /// `redirect_uri` with `code` and `state` added to its query, the URI
    /// itself kept exactly as the client gave it.
    pub fn redirect_with(&self, code: &str) -> String {
        let pairs = form_urlencoded::Serializer::new(String::new())
            .append_pair("code", code)
            .append_pair("state", &self.state)
            .finish();
        let joiner = if self.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{joiner}{pairs}", self.redirect_uri)
    }
}

fn bad(param: &'static str, problem: &str) -> ParamError {
    ParamError {
        param,
        problem: problem.to_owned(),
    }
}

/// At most 512 visible ASCII characters.
fn printable(param: &'static str, value: &str) -> Result<String, ParamError> {
    if value.len() > 512 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(param, "must be at most 512 visible ASCII characters"));
    }
    Ok(value.to_owned())
}

/// `http://localhost:PORT/PATH` or `http://127.0.0.1:PORT/PATH` (RFC 8252
/// 7.3), with a port and a path, no fragment, nothing that is not visible
/// ASCII.
pub fn check_loopback_redirect(uri: &str) -> Result<(), ParamError> {
    let problem = "must be http://localhost:PORT/PATH or http://127.0.0.1:PORT/PATH (a loopback \
                   redirect with its port)";
    let rest = ["http://localhost:", "http://127.0.0.1:"]
        .iter()
        .find_map(|prefix| uri.strip_prefix(prefix))
        .ok_or_else(|| bad("redirect_uri", problem))?;
    let (port, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    let path_ok = path.starts_with('/') && !path.contains('#');
    if !port_ok || !path_ok || uri.len() > 1024 || !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("redirect_uri", problem));
    }
    Ok(())
}

/// RFC 7636 4.1: 43 to 128 of `A-Z a-z 0-9 - . _ ~` (a verifier, and so
/// also an S256 challenge, which is 43 such characters).
pub fn check_pkce_text(param: &'static str, value: &str) -> Result<(), ParamError> {
    let ok = (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !ok {
        return Err(bad(
            param,
            "must be 43-128 characters of A-Z, a-z, 0-9, '-', '.', '_', '~' (RFC 7636)",
        ));
    }
    Ok(())
}

/// `BASE64URL(SHA256(verifier))`, without padding.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn authorize(extra: &str) -> Result<AuthorizeRequest, ParamError> {
        let query = format!(
            "response_type=code&client_id=app&code_challenge={CHALLENGE}&\
             code_challenge_method=S256&state=s1&scope=openid+email{extra}"
        );
        AuthorizeRequest::parse(&Params::parse(query.as_bytes()).unwrap())
    }

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            CHALLENGE
        );
    }

    #[test]
    fn a_loopback_request_is_accepted_and_its_redirect_kept_as_given() {
        let r = authorize("&redirect_uri=http%3A%2F%2Flocalhost%3A1455%2Fauth%2Fcallback").unwrap();
        assert_eq!(r.redirect_uri, "http://localhost:1455/auth/callback");
        assert_eq!(
            r.redirect_with("c o+de"),
            "http://localhost:1455/auth/callback?code=c+o%2Bde&state=s1"
        );
        let r = authorize("&redirect_uri=http://127.0.0.1:9/cb?x=1").unwrap();
        assert_eq!(
            r.redirect_with("c"),
            "http://127.0.0.1:9/cb?x=1&code=c&state=s1"
        );
    }

    #[test]
    fn bad_redirects_are_named() {
        for bad in [
            "https://localhost:1455/cb",
            "http://localhost/cb",
            "http://localhost:0/cb",
            "http://localhost:99999/cb",
            "http://localhost:1455",
            "http://localhost.evil.test:1455/cb",
            "http://127.0.0.1:1455/cb#frag",
            "http://evil.test:1455/cb",
            "http://127.0.0.1:1455/a b",
        ] {
            let query = format!(
                "&redirect_uri={}",
                bad.replace(' ', "%20").replace('#', "%23")
            );
            let e = authorize(&query).unwrap_err();
            assert_eq!(e.param, "redirect_uri", "{bad}");
        }
    }

    #[test]
    fn missing_and_wrong_parameters_are_named() {
        let params = Params::parse(b"response_type=code").unwrap();
        assert_eq!(
            AuthorizeRequest::parse(&params).unwrap_err().param,
            "code_challenge_method"
        );
        let e = authorize("&redirect_uri=").unwrap_err();
        assert_eq!(e.to_string(), "parameter `redirect_uri`: missing");
        let query = "response_type=token&client_id=a&redirect_uri=http://localhost:1/c&\
                     code_challenge_method=S256&code_challenge=x&state=s";
        let e = AuthorizeRequest::parse(&Params::parse(query.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(e.param, "response_type");
        let query = query.replace("=token", "=code").replace("S256", "plain");
        let e = AuthorizeRequest::parse(&Params::parse(query.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(e.param, "code_challenge_method");
        let query = query.replace("plain", "S256");
        let e = AuthorizeRequest::parse(&Params::parse(query.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(e.param, "code_challenge");
        assert!(Params::parse(b"state=a&state=b")
            .unwrap_err()
            .contains("`state`"));
    }
}
