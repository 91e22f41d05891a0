//! The one ECR call, `GetAuthorizationToken`, through AWS's own SDK: the
//! standard credential chain (environment, shared config and credentials
//! files with `profile=`, web identity, container and instance metadata),
//! region resolution and endpoint overrides (`AWS_ENDPOINT_URL_ECR`,
//! `AWS_ENDPOINT_URL`), as the Go ociregistry gets them from the Go SDK.
//! Its HTTPS client is rustls with the ring provider, as everywhere else here.

use std::time::SystemTime;

use aws_config::BehaviorVersion;
use aws_sdk_ecr::config::Region;
use aws_sdk_ecr::error::DisplayErrorContext;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use super::Issued;
use crate::config::EcrSource;

/// Asks ECR for an authorization token with the credentials `source` names.
pub(super) async fn get_authorization_token(source: &EcrSource) -> Result<Issued, String> {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(profile) = &source.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &source.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err("no AWS region: set providerOpts region=, AWS_REGION, or the profile's region".to_string());
    }
    let answer = aws_sdk_ecr::Client::new(&config)
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| format!("GetAuthorizationToken: {}", DisplayErrorContext(e)))?;
    let data = answer.authorization_data().first().ok_or("ECR answered no authorization data")?;
    let token = data.authorization_token().ok_or("ECR answered no authorization token")?;
    Ok(Issued { token: token.to_string(), expires_at: data.expires_at().and_then(|t| SystemTime::try_from(*t).ok()) })
}
