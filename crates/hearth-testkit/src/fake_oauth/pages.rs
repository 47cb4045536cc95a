//! The fake provider's HTML: the consent page, whose one button covers
//! the whole viewport (so a click anywhere, the centre of a VM's screen
//! in particular, approves), and the page that names a bad parameter.
//! Plain HTML and CSS, no script: it works in any browser, and a test can
//! submit it with curl just as well.

use super::checks::AuthorizeRequest;

/// The `<title>` of the consent page, for tests that wait for it.
pub const AUTHORIZE_TITLE: &str = "Fake provider: authorize";

/// The consent page: a form carrying the request to `/oauth/approve`.
pub fn authorize(request: &AuthorizeRequest) -> String {
    let hidden = [
        ("client_id", &request.client_id),
        ("redirect_uri", &request.redirect_uri),
        ("code_challenge", &request.code_challenge),
        ("state", &request.state),
    ]
    .iter()
    .map(|(name, value)| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        )
    })
    .collect::<Vec<_>>()
    .join("\n");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{AUTHORIZE_TITLE}</title>\n<style>\
         html,body{{margin:0;height:100%}}\
         button{{position:fixed;inset:0;width:100vw;height:100vh;margin:0;border:0;\
         background:#2b6cb0;color:#fff;font:bold 48px sans-serif;cursor:pointer}}\
         </style></head>\n<body>\
         <form method=\"post\" action=\"/oauth/approve\">\n{hidden}\n\
         <input type=\"hidden\" name=\"response_type\" value=\"code\">\
         <input type=\"hidden\" name=\"code_challenge_method\" value=\"S256\">\n\
         <button type=\"submit\" id=\"authorize\">Authorize {}</button>\
         </form></body></html>\n",
        escape(&request.client_id)
    )
}

/// A 400 page naming the parameter and what is wrong with it.
pub fn bad_request(message: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Fake provider: bad \
         request</title></head>\n<body><h1>Bad request</h1><p>{}</p></body></html>\n",
        escape(message)
    )
}

/// Text safe inside an HTML attribute or element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_what_the_client_sent() {
        let request = AuthorizeRequest {
            client_id: "app".into(),
            redirect_uri: "http://localhost:1/cb?a=1&b=\"2\"".into(),
            code_challenge: "c".into(),
            state: "<script>".into(),
        };
        let page = authorize(&request);
        assert!(page.contains("value=\"http://localhost:1/cb?a=1&amp;b=&quot;2&quot;\""));
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"));
        assert!(page.contains(AUTHORIZE_TITLE));
        assert_eq!(page.matches("<button").count(), 1);
    }
}
