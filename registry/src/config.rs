//! The registry file as written by operators (TOML) and as shipped to the
//! filters (the same structure serialised as JSON).
//!
//! Every struct denies unknown fields: a typo in a limit name must refuse to
//! load rather than silently leave a tenant unlimited.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::Limits;
use crate::names::{ModelName, PoolName, TenantId, TierName};

/// Root of the registry file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default)]
    pub gateway: GatewaySettings,
    #[serde(default)]
    pub tiers: BTreeMap<TierName, Tier>,
    #[serde(default)]
    pub models: BTreeMap<ModelName, Model>,
    #[serde(default)]
    pub pools: BTreeMap<PoolName, Pool>,
    #[serde(default)]
    pub jwt_issuers: Vec<JwtIssuer>,
    #[serde(default)]
    pub tenants: Vec<Tenant>,
}

/// Gateway-wide defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Cache isolation profile for tenants that do not override it.
    pub cache_profile: CacheProfile,
    /// Largest request body the policy filter buffers (413 above it).
    pub max_body_bytes: u64,
    /// Prompt estimate (tokens) above which a request counts as long-context.
    pub long_context_tokens: u32,
    /// Size, in estimated tokens, of one block of the prefix-affinity hash chain.
    pub prefix_block_tokens: u32,
    /// `max_tokens` assumed for reservation when the client sends none.
    pub default_max_tokens: u32,
    /// Request bytes one Envoy worker holds while reading bodies; a body
    /// that would pass it is refused with 503 `server_busy`.
    pub max_buffered_bytes_per_worker: u64,
    /// Request bytes one tenant may have held on one worker at once; a body
    /// that would pass it is refused with 429 `too_many_pending_bodies`.
    pub max_buffered_bytes_per_tenant: u64,
    /// Hosts a media part's URL (`image_url`, `audio_url`, `video_url`) may
    /// name; the pool fetches them. `data:` URLs are always allowed; any
    /// other URL is refused (400) unless its host is listed here.
    pub media_url_hosts: Vec<String>,
    /// Most inputs one embeddings request may carry (OpenAI's cap: 2048).
    pub max_embedding_inputs: u32,
    /// Body members llm-policy's field policy does not know that this
    /// deployment passes on (a newer vLLM's); their text is charged as
    /// prompt tokens. Refused and gateway-owned members stay refused.
    pub extra_fields: Vec<String>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            cache_profile: CacheProfile::Strict,
            max_body_bytes: 4 * 1024 * 1024,
            long_context_tokens: 8192,
            prefix_block_tokens: 64,
            default_max_tokens: 1024,
            max_buffered_bytes_per_worker: 64 * 1024 * 1024,
            max_buffered_bytes_per_tenant: 16 * 1024 * 1024,
            media_url_hosts: Vec::new(),
            max_embedding_inputs: 2048,
            extra_fields: Vec::new(),
        }
    }
}

/// How much of vLLM's prefix cache a tenant shares with others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheProfile {
    /// Every request carries a tenant-derived `cache_salt`: no cross-tenant hits.
    #[default]
    Strict,
    /// No salt: tenants share cached prefixes and accept the timing side channel.
    Trusted,
}

/// What to do with a request when ratelimit-service cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Let the request through unmetered.
    Open,
    /// Refuse with 503.
    #[default]
    Closed,
}

/// Service levels: defaults for every tenant on the tier.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Strict priority band: a higher band is always admitted first.
    #[serde(default)]
    pub priority: u32,
    /// Fair-share weight inside a band.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Pools this tier may be routed to; empty means all.
    #[serde(default)]
    pub pools: Vec<PoolName>,
    /// Largest prompt estimate + `max_tokens` accepted.
    #[serde(default)]
    pub max_context_tokens: Option<u32>,
    /// Largest `max_tokens` accepted.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub fail_mode: FailMode,
    #[serde(default)]
    pub cache_profile: Option<CacheProfile>,
    /// Whether requests may carry their own `chat_template` /
    /// `chat_template_kwargs` (a template runs on the pool's CPU and decides
    /// what the model sees; off by default).
    #[serde(default)]
    pub allow_chat_templates: bool,
    /// vLLM `priority` the gateway sets on this tier's requests (lower runs
    /// first, with `--scheduling-policy priority`); a client's own is
    /// always replaced, or removed when this is unset.
    #[serde(default)]
    pub vllm_priority: Option<i32>,
}

fn default_weight() -> f64 {
    1.0
}

/// What kind of endpoint a model serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[default]
    Chat,
    Embedding,
}

/// A served model, or a LoRA adapter bound to one tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    #[serde(default)]
    pub kind: ModelKind,
    /// Access groups: a tenant allowed `group:<name>` may use the model.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub max_context_tokens: Option<u32>,
    #[serde(default)]
    pub price: Price,
    /// For a LoRA adapter: the base model it runs on.
    #[serde(default)]
    pub base: Option<ModelName>,
    /// For a LoRA adapter: the only tenant that may use it.
    #[serde(default)]
    pub tenant: Option<TenantId>,
}

impl Model {
    pub fn is_adapter(&self) -> bool {
        self.base.is_some()
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub input_per_mtok: f64,
    #[serde(default)]
    pub output_per_mtok: f64,
    /// Price of prompt tokens served from the prefix cache; defaults to the input price.
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
}

/// Workload class a pool is built for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolClass {
    #[default]
    Latency,
    Throughput,
}

/// A GPU pool behind one Envoy cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    #[serde(default)]
    pub class: PoolClass,
    /// Replica addresses (`host:port`) whose `/metrics` tell how busy the pool is.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Requests admitted per replica at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight_per_replica: u32,
    /// Longest time a request waits in the admission queue.
    #[serde(default = "default_queue_wait_ms")]
    pub max_queue_wait_ms: u64,
    /// Queued requests allowed per tenant.
    #[serde(default = "default_queue_depth")]
    pub max_queue_depth_per_tenant: u32,
    /// Replica counts as saturated above this many waiting requests.
    #[serde(default)]
    pub max_waiting_per_replica: Option<u32>,
    /// Replica counts as saturated above this KV-cache usage (0..=1).
    #[serde(default)]
    pub max_kv_cache_usage: Option<f64>,
    /// Scrape period of replica metrics; metrics older than 3 periods count as saturated.
    #[serde(default = "default_scrape_ms")]
    pub metrics_interval_ms: u64,
    /// Slots per replica above `max_in_flight_per_replica` that only a light
    /// tenant may take (recent weighted service under half the heaviest
    /// active tenant's): a light tenant's burst at a pool saturated by
    /// someone else's backlog starts at once. 0 turns it off.
    #[serde(default = "default_light_reserve")]
    pub light_tenant_reserve_per_replica: u32,
}

fn default_in_flight() -> u32 {
    8
}
fn default_queue_wait_ms() -> u64 {
    30_000
}
fn default_queue_depth() -> u32 {
    64
}
fn default_scrape_ms() -> u64 {
    500
}
fn default_light_reserve() -> u32 {
    2
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            class: PoolClass::Latency,
            replicas: Vec::new(),
            max_in_flight_per_replica: default_in_flight(),
            max_queue_wait_ms: default_queue_wait_ms(),
            max_queue_depth_per_tenant: default_queue_depth(),
            max_waiting_per_replica: None,
            max_kv_cache_usage: None,
            metrics_interval_ms: default_scrape_ms(),
            light_tenant_reserve_per_replica: default_light_reserve(),
        }
    }
}

/// A JWT issuer (identity provider) trusted to name tenants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values; at least one must match.
    pub audiences: Vec<String>,
    /// Claim whose string value is the tenant id.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Inline JWKS document (JSON text).
    #[serde(default)]
    pub jwks: Option<String>,
    /// Keys given one by one (PEM public keys or HS256 secrets).
    #[serde(default)]
    pub keys: Vec<JwtKey>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn default_tenant_claim() -> String {
    "tenant".to_owned()
}
fn default_leeway() -> u64 {
    30
}

/// Signature algorithms the gateway accepts. `none` is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    RS256,
    ES256,
    EdDSA,
    HS256,
}

/// One verification key of an issuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    /// Key id matched against the token's `kid`; a key without one matches tokens without one.
    #[serde(default)]
    pub kid: Option<String>,
    pub alg: JwtAlgorithm,
    /// PEM public key (RS256, ES256, EdDSA).
    #[serde(default)]
    pub pem: Option<String>,
    /// Shared secret (HS256), as given.
    #[serde(default)]
    pub secret: Option<String>,
}

/// One tenant: an internal team or a customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: TenantId,
    pub tier: TierName,
    /// A disabled tenant authenticates but is refused with 403.
    #[serde(default)]
    pub disabled: bool,
    /// Allowed models: exact names, `*` wildcards, or `group:<name>`.
    #[serde(default, deserialize_with = "exact_list")]
    pub models: Vec<String>,
    /// Fair-share weight; overrides the tier's.
    #[serde(default)]
    pub weight: Option<f64>,
    /// Pools; overrides the tier's list.
    #[serde(default)]
    pub pools: Option<Vec<PoolName>>,
    #[serde(default)]
    pub cache_profile: Option<CacheProfile>,
    /// Overrides of the tier's limits; read them with [`Tenant::limits`].
    /// Boxed and absent when unset, as most are: every filter VM holds every
    /// tenant, and an inline `Limits` is most of a tenant's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Box<Limits>>,
    /// Extra limits for one model (keyed by model name), on top of the tenant's.
    #[serde(default)]
    pub model_limits: BTreeMap<ModelName, Limits>,
    #[serde(default, deserialize_with = "exact_list")]
    pub api_keys: Vec<ApiKey>,
    /// SPIFFE IDs of mTLS clients that act as this tenant.
    #[serde(default, deserialize_with = "exact_list")]
    pub spiffe_ids: Vec<String>,
    /// How this tenant's per-request audit trail is kept; read it with
    /// [`Tenant::audit`]. Absent when the defaults apply, for the same
    /// reason as `limits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Box<AuditPolicy>>,
}

/// A tenant's list, at its exact length. serde grows a list from room for
/// four; every filter VM holds every tenant, and with 100,000 tenants of one
/// key each that spare room was a quarter of the VM.
fn exact_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut list = Vec::<T>::deserialize(deserializer)?;
    list.shrink_to_fit();
    Ok(list)
}

static NO_LIMITS: Limits = Limits::NONE;
static DEFAULT_AUDIT: std::sync::LazyLock<AuditPolicy> =
    std::sync::LazyLock::new(AuditPolicy::default);

impl Tenant {
    /// The tenant's own limits (none set when the registry gives none).
    pub fn limits(&self) -> &Limits {
        self.limits.as_deref().unwrap_or(&NO_LIMITS)
    }

    /// The tenant's audit policy (the defaults when the registry gives none).
    pub fn audit(&self) -> &AuditPolicy {
        self.audit.as_deref().unwrap_or(&DEFAULT_AUDIT)
    }
}

/// A tenant's audit trail: one record per request, in its own partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditPolicy {
    /// Days a record is kept; older day files are deleted. 0 keeps no trail
    /// at all (nothing is written for the tenant).
    pub retention_days: u32,
    /// Seal every record with AES-256-GCM under a key derived for this
    /// tenant (ratelimit-service needs `--audit-key-file`).
    pub encrypt: bool,
    /// Keep the request body as sent to the pool (redacted, capped at
    /// `max_prompt_bytes`) in the record. Off: hashes only, never content.
    pub log_prompts: bool,
    /// Longest prompt kept, in bytes; the rest is cut off and marked.
    pub max_prompt_bytes: u32,
    /// Built-in redactions applied to a kept prompt before it is written.
    pub redact: Vec<PiiKind>,
    /// Extra redactions: regular expressions (Rust `regex` syntax) whose
    /// matches are replaced by `[REDACTED:custom]`.
    pub redact_patterns: Vec<String>,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        Self {
            retention_days: 30,
            encrypt: false,
            log_prompts: false,
            max_prompt_bytes: 16 * 1024,
            redact: PiiKind::ALL.to_vec(),
            redact_patterns: Vec::new(),
        }
    }
}

/// Kinds of personal data or secrets a kept prompt is scrubbed of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    /// Payment card numbers (13 to 19 digits passing the Luhn check).
    Card,
    /// API keys, bearer tokens, private keys and the like.
    Secret,
}

impl PiiKind {
    pub const ALL: [PiiKind; 4] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::Card,
        PiiKind::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Card => "card",
            PiiKind::Secret => "secret",
        }
    }
}

/// An API key, stored only as the SHA-256 digest of its plaintext.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Non-secret handle used to name the key in logs and in `tenantctl revoke`.
    pub id: String,
    /// Lower-case hex SHA-256 of the plaintext key.
    pub sha256: String,
    #[serde(default)]
    pub revoked: bool,
    /// RFC 3339 instant after which the key is refused.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}
