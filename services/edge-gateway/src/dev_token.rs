//! `edge-gateway dev-token`: a token signed with the development key that
//! `dev-certs` keeps in `.dev/certs`, accepted by a gateway started by
//! `just up`. For local use only; production tokens come from an identity provider.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use suite_devcerts::token_key::DevTokenKey;

/// Issuer and audience of development tokens; `just up` configures the gateway with them.
pub const DEV_ISSUER: &str = "suite-dev";
pub const DEV_AUDIENCE: &str = "suite";

#[derive(Debug, Clone, clap::Args)]
pub struct DevTokenArgs {
    /// Directory `dev-certs` wrote to.
    #[arg(long, env = "DEV_CERTS_DIR", default_value = ".dev/certs")]
    pub certs_dir: PathBuf,

    /// The token's subject: the id of the user it acts as.
    #[arg(long)]
    pub subject: String,

    /// Roles, comma separated (`admin` may act on every user's records).
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,

    #[arg(long, default_value = DEV_ISSUER)]
    pub issuer: String,

    #[arg(long, default_value = DEV_AUDIENCE)]
    pub audience: String,

    /// Lifetime of the token.
    #[arg(long, default_value_t = 3600)]
    pub ttl_seconds: u64,
}

#[derive(Debug, serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    roles: &'a [String],
}

/// Signs a token for `args` with `key` (ES256, the key's `kid`).
pub fn mint(key: &DevTokenKey, args: &DevTokenArgs) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    let claims = Claims {
        sub: &args.subject,
        iss: &args.issuer,
        aud: &args.audience,
        iat: now,
        nbf: now,
        exp: now + args.ttl_seconds,
        roles: &args.roles,
    };
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    let encoding = EncodingKey::from_ec_pem(key.key_pem.as_bytes()).context("the development signing key is not an EC key")?;
    jsonwebtoken::encode(&header, &claims, &encoding).context("cannot sign the token")
}

/// Prints a development token on stdout.
pub fn print(args: &DevTokenArgs) -> anyhow::Result<()> {
    let key = DevTokenKey::load(&args.certs_dir)?;
    let token = mint(&key, args)?;
    #[allow(clippy::print_stdout)]
    {
        println!("{token}");
    }
    Ok(())
}
