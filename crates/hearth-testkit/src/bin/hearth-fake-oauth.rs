//! The fake OAuth provider of the tests as a program, for the quick start
//! (`scripts/quickstart`): a login session needs a provider, and this
//! machine may reach none. Prints `listening on 127.0.0.1:PORT`, then a
//! line per consent page served, approval and token grant (never a token),
//! until killed.

use std::time::Duration;

use hearth_testkit::fake_oauth::FakeOAuth;

fn main() -> std::io::Result<()> {
    let fake = FakeOAuth::start()?;
    println!("listening on {}", fake.addr());
    let mut seen = (0, 0, 0);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = (fake.pages_served(), fake.approvals(), fake.token_grants());
        if now.0 > seen.0 {
            println!("consent page served ({})", now.0);
        }
        if now.1 > seen.1 {
            println!("authorized ({})", now.1);
        }
        if now.2 > seen.2 {
            println!("tokens granted ({})", now.2);
        }
        seen = now;
    }
}
