//! The HTTP client the OTLP exporter sends with: the product's own reqwest.

use std::time::Duration;

/// The OTLP exporter's HTTP client: the product's own reqwest, with rustls, so an `https://`
/// collector needs no second TLS stack.
#[derive(Debug, Clone)]
pub struct OtlpClient(reqwest::Client);

impl OtlpClient {
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self(
            reqwest::Client::builder()
                .use_rustls_tls()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()?,
        ))
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let response = self.0.execute(request).await?;
        let mut answer = http::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = response.headers().clone();
        }
        // A collector's answer is small; a large one is cut, never held whole.
        let body = response.bytes().await?;
        Ok(answer.body(body.slice(..body.len().min(1 << 20)))?)
    }
}
