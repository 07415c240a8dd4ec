//! The authentication phase's host side, run by the gateway module: reads what the host knows
//! about the request, hands it to [`Authenticator`], and writes the outcome
//! back.
//!
//! Every host call goes through `filter_common::host` (fallible, bytes): a
//! header that is not UTF-8 must never reach an unwrap inside the VM. The
//! rule for such bytes: a header this phase reads (credentials, request
//! id) is refused with 400 `invalid_header`; any other header is left alone
//! for the upstream to judge, except gateway-owned names, which are removed
//! whatever their bytes.

use std::time::UNIX_EPOCH;

use filter_common::headers::{self as names, HeaderSnapshot, is_gateway_owned_name};
use filter_common::host::{self, HostError, send_error};
use proxy_wasm::types::MapType;

use crate::{AuthError, Authenticator, Identity, is_valid_request_id, new_request_id};

/// Why the phase could not name the tenant.
pub enum Refusal {
    Auth(AuthError),
    Host(HostError),
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        Refusal::Auth(e)
    }
}

impl From<HostError> for Refusal {
    fn from(e: HostError) -> Self {
        Refusal::Host(e)
    }
}

const REQUEST: MapType = MapType::HttpRequestHeaders;

/// A request header this phase reads, as text; non-UTF-8 bytes refuse it.
fn read_header(headers: &HeaderSnapshot, name: &'static str) -> Result<Option<String>, Refusal> {
    headers
        .text(name)
        .map_err(|_| AuthError::NonUtf8Header(name).into())
}

fn set_header(name: &str, value: Option<&str>) -> Result<(), HostError> {
    host::set_header(REQUEST, name.as_bytes(), value.map(str::as_bytes))
}

fn now_unix() -> i64 {
    host::now_or_epoch()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The verified mTLS peer's URI SAN; absent, empty or not UTF-8 is none
/// (the certificate was verified by Envoy, its SAN is only looked up).
fn peer_uri_san() -> Option<String> {
    let raw = host::property(&["connection", "uri_san_peer_certificate"])
        .ok()
        .flatten()?;
    String::from_utf8(raw).ok().filter(|s| !s.is_empty())
}

fn strip_gateway_headers(headers: &mut HeaderSnapshot) -> Result<(), HostError> {
    for name in headers.remove_where(is_gateway_owned_name) {
        host::set_header(REQUEST, &name, None)?;
    }
    Ok(())
}

/// Removes `name` from the request, if the client sent it.
fn drop_header(headers: &mut HeaderSnapshot, name: &str) -> Result<(), HostError> {
    if headers.remove(name) {
        set_header(name, None)?;
    }
    Ok(())
}

/// An authenticated request: who, and its request id.
pub struct Authenticated {
    pub identity: Identity,
    pub request_id: String,
}

/// Strips client-sent gateway headers, names the tenant, removes the
/// credentials and writes the identity headers the upstream sees.
/// `headers`: the request's, as they arrived; kept in step with what is
/// removed here.
pub fn authenticate(
    authenticator: &Authenticator,
    headers: &mut HeaderSnapshot,
) -> Result<Authenticated, Refusal> {
    // Before anything reads them: nothing a client sends may pass as ours.
    strip_gateway_headers(headers)?;
    let authorization = read_header(headers, "authorization")?;
    let api_key = read_header(headers, "x-api-key")?;
    // A host call per request saved where no tenant uses mTLS.
    let peer = authenticator
        .needs_peer(authorization.as_deref(), api_key.as_deref())
        .then(peer_uri_san)
        .flatten();
    let identity = authenticator.authenticate(
        authorization.as_deref(),
        api_key.as_deref(),
        peer.as_deref(),
        // A host call per request saved where no key expires.
        if authenticator.needs_clock() {
            now_unix()
        } else {
            0
        },
    )?;
    // Tenant credentials are the gateway's business, not the pool's.
    drop_header(headers, "authorization")?;
    drop_header(headers, "x-api-key")?;
    set_header(names::TENANT_ID, Some(&identity.tenant_id))?;
    set_header(names::TENANT_TIER, Some(&identity.tier))?;
    // A client id that is not UTF-8 or not sane is replaced, not refused:
    // the id is for correlation, and a fresh one serves that. One sane id,
    // sent once (Envoy's own, or the client's it preserved), is already
    // what the upstream must see: no host call to write it again.
    let sent = headers
        .text(names::REQUEST_ID)
        .ok()
        .flatten()
        .filter(|id| is_valid_request_id(id));
    let request_id = match sent {
        Some(id) if headers.count(names::REQUEST_ID) == 1 => id,
        sent => {
            let id = sent.unwrap_or_else(new_request_id);
            set_header(names::REQUEST_ID, Some(&id))?;
            id
        }
    };
    log::debug!(
        "tenant-auth: {} via {} ({})",
        identity.tenant_id,
        identity.method.as_str(),
        identity.credential_id
    );
    Ok(Authenticated {
        identity,
        request_id,
    })
}

/// Sends the reply for a refusal.
pub fn refuse(authenticator: &Authenticator, refusal: Refusal) {
    match refusal {
        Refusal::Auth(error) => {
            log::info!("tenant-auth: refused: {error}");
            send_error(&error.into_gateway_error_in(authenticator.realm()));
        }
        Refusal::Host(error) => {
            log::error!("tenant-auth: {error}; refusing");
            send_error(&filter_common::host_failure());
        }
    }
}
