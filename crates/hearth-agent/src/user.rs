//! Turning a service's `user` (a name from /etc/passwd or a numeric uid)
//! into ids. /etc/passwd is read directly: the static agent has no NSS.

use std::path::Path;

/// Where the guest's users are.
pub const PASSWD: &str = "/etc/passwd";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub home: Option<String>,
}

/// The ids of `user`, by `passwd` (the file's path).
pub fn lookup(user: &str, passwd: &Path) -> Result<Ids, String> {
    let text = std::fs::read_to_string(passwd).unwrap_or_default();
    find(user, &text).ok_or_else(|| {
        format!(
            "no user {user:?} in {}: give a user the image has, or a numeric uid",
            passwd.display()
        )
    })
}

fn find(user: &str, passwd: &str) -> Option<Ids> {
    let numeric: Option<u32> = user.parse().ok();
    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        let (name, uid, gid) = (f.first()?, f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?);
        let hit = match numeric {
            Some(n) => uid == n,
            None => *name == user,
        };
        hit.then(|| Ids {
            uid,
            gid,
            home: f.get(5).map(|h| h.to_string()),
        })
    });
    // A numeric uid needs no entry: its group is the same number.
    entry.or_else(|| {
        numeric.map(|n| Ids {
            uid: n,
            gid: n,
            home: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001::/home/web:/bin/false\n";

    #[test]
    fn names_and_numbers_are_found() {
        let web = find("web", PASSWD).unwrap();
        assert_eq!((web.uid, web.gid), (1000, 1001));
        assert_eq!(web.home.as_deref(), Some("/home/web"));
        assert_eq!(find("1000", PASSWD).unwrap().gid, 1001);
        assert_eq!(find("4242", PASSWD).unwrap().gid, 4242);
        assert_eq!(find("nobody", PASSWD), None);
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        std::fs::write(&p, PASSWD).unwrap();
        assert!(lookup("ghost", &p).unwrap_err().contains("\"ghost\""));
    }
}
