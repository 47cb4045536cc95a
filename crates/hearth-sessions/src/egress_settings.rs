//! A tenant's and a user's egress settings: the domains a tenant's
//! sessions may reach besides their provider's, and the upstream proxy a
//! tenant's or a user's sessions go through (the user's first). The proxy's
//! password is sealed in the vault as the credential of the pseudo-provider
//! `egress-proxy` and opened only on the host, when a session's policy is
//! made: it never reaches a VM, a log or an API answer.

use hearth_egress::{DomainPattern, ProxyCredentials, UpstreamProxy};
use hearth_store::{CredentialOwner, EgressSettingsRecord};
use hearth_types::session::{EgressSettingsInfo, PutEgress, UpstreamSetting};
use hearth_types::{ProviderId, TenantId, Timestamp, UserName};
use hearth_vault::{CredentialFile, CredentialFiles, Secret};
use zeroize::Zeroizing;

use crate::{Inner, SessionError};

/// The pseudo-provider an upstream proxy's credentials are sealed under.
pub const PROXY_PROVIDER: &str = "egress-proxy";
/// The user name a tenant's own proxy credentials are sealed under.
const TENANT_USER: &str = "_tenant";
/// The one file of a sealed proxy credential: `username\npassword`.
const PROXY_FILE: &str = "upstream-proxy";

impl Inner {
    pub(crate) async fn put_egress(
        &self,
        tenant: &TenantId,
        user: Option<&UserName>,
        body: &PutEgress,
    ) -> Result<EgressSettingsInfo, SessionError> {
        check(user, body).map_err(SessionError::Invalid)?;
        let owner = proxy_owner(tenant, user);
        let credentials = body.upstream.as_ref().and_then(credentials_of);
        match &credentials {
            Some(secret) => {
                let files = CredentialFiles {
                    files: vec![CredentialFile {
                        path: PROXY_FILE.to_owned(),
                        mode: 0o600,
                        contents: Secret::new(secret.as_bytes().to_vec()),
                    }],
                };
                self.vault.seal(&owner, &files).await.map_err(|e| {
                    SessionError::Invalid(format!(
                        "the proxy's credentials could not be sealed: {e}"
                    ))
                })?;
            }
            None => {
                self.store.delete_credentials(&owner).await?;
            }
        }
        let record = EgressSettingsRecord {
            tenant: tenant.clone(),
            user: user.cloned(),
            domains: body.domains.clone(),
            upstream: body.upstream.as_ref().map(|u| u.address.clone()),
            upstream_credentials: credentials.is_some(),
            updated_at: Timestamp::now(),
        };
        self.store.put_egress_settings(&record).await?;
        Ok(info(record))
    }

    pub(crate) async fn egress_of(
        &self,
        tenant: &TenantId,
        user: Option<&UserName>,
    ) -> Result<Option<EgressSettingsInfo>, SessionError> {
        Ok(self.store.egress_settings(tenant, user).await?.map(info))
    }

    pub(crate) async fn delete_egress(
        &self,
        tenant: &TenantId,
        user: Option<&UserName>,
    ) -> Result<Option<EgressSettingsInfo>, SessionError> {
        self.store
            .delete_credentials(&proxy_owner(tenant, user))
            .await?;
        Ok(self
            .store
            .delete_egress_settings(tenant, user)
            .await?
            .map(info))
    }

    /// The tenant's extra domains, and the upstream proxy a session of
    /// `user` goes through (the user's, else the tenant's, else `None`:
    /// the server's), its credentials opened from the vault.
    pub(crate) async fn session_egress(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<(Vec<String>, Option<UpstreamProxy>), String> {
        let read =
            |e: hearth_store::StoreError| format!("the egress settings could not be read: {e}");
        let of_tenant = self
            .store
            .egress_settings(tenant, None)
            .await
            .map_err(read)?;
        let of_user = self
            .store
            .egress_settings(tenant, Some(user))
            .await
            .map_err(read)?;
        let domains = of_tenant
            .as_ref()
            .map(|t| t.domains.clone())
            .unwrap_or_default();
        let chosen = [of_user, of_tenant]
            .into_iter()
            .flatten()
            .find(|r| r.upstream.is_some());
        let Some(record) = chosen else {
            return Ok((domains, None));
        };
        Ok((domains, Some(self.upstream(&record).await?)))
    }

    async fn upstream(&self, record: &EgressSettingsRecord) -> Result<UpstreamProxy, String> {
        let address = record.upstream.as_deref().unwrap_or_default();
        let parsed = address.parse().map_err(|_| {
            format!("the stored upstream proxy {address:?} is not IP:PORT: set it again")
        })?;
        let mut proxy = UpstreamProxy::new(parsed);
        if record.upstream_credentials {
            let owner = proxy_owner(&record.tenant, record.user.as_ref());
            let opened = self.vault.open_current(&owner).await.map_err(|e| {
                format!("the upstream proxy's credentials could not be opened: {e}")
            })?;
            let opened =
                opened.ok_or("the upstream proxy's credentials are gone: set them again")?;
            let text = Zeroizing::new(
                String::from_utf8_lossy(opened.files.files[0].contents.expose()).into_owned(),
            );
            let (name, password) = text.split_once('\n').unwrap_or((&text, ""));
            proxy = proxy.with_credentials(ProxyCredentials::basic(name, password));
        }
        Ok(proxy)
    }
}

fn check(user: Option<&UserName>, body: &PutEgress) -> Result<(), String> {
    if user.is_some() && !body.domains.is_empty() {
        return Err("`domains` are widened per tenant (`PUT /v1/tenants/{tenant}/egress`, an admin token), not per user: leave them out".into());
    }
    for d in &body.domains {
        DomainPattern::parse(d).map_err(|e| format!("`domains`: {e}"))?;
    }
    let Some(up) = &body.upstream else {
        return Ok(());
    };
    up.address.parse::<std::net::SocketAddr>().map_err(|_| {
        format!(
            "`upstream.address` {:?} is not IP:PORT (e.g. 10.0.0.5:3128)",
            up.address
        )
    })?;
    match (&up.username, &up.password) {
        (Some(name), Some(_)) if name.is_empty() || name.contains(':') || name.contains('\n') => {
            Err("`upstream.username` must be non-empty, without `:` or a newline".into())
        }
        (Some(_), Some(p)) if p.contains('\n') => {
            Err("`upstream.password` must not hold a newline".into())
        }
        (Some(_), None) | (None, Some(_)) => {
            Err("give `upstream.username` and `upstream.password` together, or neither".into())
        }
        _ => Ok(()),
    }
}

fn credentials_of(up: &UpstreamSetting) -> Option<Zeroizing<String>> {
    match (&up.username, &up.password) {
        (Some(name), Some(password)) => Some(Zeroizing::new(format!("{name}\n{password}"))),
        _ => None,
    }
}

fn proxy_owner(tenant: &TenantId, user: Option<&UserName>) -> CredentialOwner {
    CredentialOwner {
        tenant: tenant.clone(),
        user: user
            .cloned()
            .unwrap_or_else(|| TENANT_USER.parse().expect("a valid user name")),
        provider: PROXY_PROVIDER
            .parse::<ProviderId>()
            .expect("a valid provider id"),
    }
}

fn info(r: EgressSettingsRecord) -> EgressSettingsInfo {
    EgressSettingsInfo {
        tenant: r.tenant,
        user: r.user,
        domains: r.domains,
        upstream: r.upstream,
        upstream_credentials: r.upstream_credentials,
        updated_at: r.updated_at,
    }
}
