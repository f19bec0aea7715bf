//! Fetches a small document by URL — in ward, a JWKS for the sentry `jwks` validator and for JWT API tokens.
//!
//! HTTPS verifies the server against the operating system's roots (rustls + webpki). Plain HTTP is allowed only
//! to a loopback host, so keys can never arrive unauthenticated over a network. Answers are size-capped and the
//! whole exchange is time-bounded. This crate does not parse or cache what it fetches.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: not a valid URL")]
    BadUrl { url: String },
    #[error("{url}: only https:// (or http:// to a loopback address) is allowed")]
    InsecureScheme { url: String },
    #[error("{url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("{url}: answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the answer is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

/// True for `http(s)://` values (as opposed to file paths).
pub fn is_url(value: &str) -> bool {
    let lower = value.trim().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// GETs `url`, returning at most `limit` bytes, within `timeout`.
pub async fn fetch(url: &str, limit: usize, timeout: Duration) -> Result<Vec<u8>, FetchError> {
    match tokio::time::timeout(timeout, fetch_inner(url, limit)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout { url: url.to_owned(), timeout }),
    }
}

async fn fetch_inner(url: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
    let uri: http::Uri = url.trim().parse().map_err(|_| FetchError::BadUrl { url: url.to_owned() })?;
    let host = uri.host().ok_or_else(|| FetchError::BadUrl { url: url.to_owned() })?.to_owned();
    let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("https") => true,
        Some("http") if is_loopback(&host) => false,
        _ => return Err(FetchError::InsecureScheme { url: url.to_owned() }),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let connect_err = |detail: String| FetchError::Connect { url: url.to_owned(), detail };
    let tcp = tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .map_err(|err| connect_err(err.to_string()))?;
    let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".to_owned());
    let request = http::Request::get(path)
        .header(http::header::HOST, uri.authority().map(|a| a.as_str()).unwrap_or(&host))
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|err| connect_err(err.to_string()))?;
    let response = if https {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|err| connect_err(err.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|err| connect_err(err.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|err| connect_err(err.to_string()))?;
        send(TokioIo::new(tls), request).await.map_err(connect_err)?
    } else {
        send(TokioIo::new(tcp), request).await.map_err(connect_err)?
    };
    if response.status() != http::StatusCode::OK {
        return Err(FetchError::Status { url: url.to_owned(), status: response.status().as_u16() });
    }
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|_| FetchError::TooLarge { url: url.to_owned(), limit })?;
    Ok(body.to_bytes().to_vec())
}

async fn send<T>(
    io: TokioIo<T>,
    request: http::Request<Empty<bytes::Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    sender.send_request(request).await.map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_only_to_loopback() {
        let err = fetch("http://example.com/jwks.json", 1024, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, FetchError::InsecureScheme { .. }), "{err}");
        let err = fetch("ftp://127.0.0.1/x", 1024, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, FetchError::InsecureScheme { .. }), "{err}");
        assert!(is_url("HTTPS://idp/jwks") && !is_url("/etc/jwks.json"));
    }

    #[tokio::test]
    async fn fetches_from_a_loopback_server_with_a_size_cap() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                let body = r#"{"keys":[]}"#;
                let _ = tcp
                    .write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes())
                    .await;
            }
        });
        let url = format!("http://{addr}/jwks.json");
        assert_eq!(fetch(&url, 1024, Duration::from_secs(5)).await.unwrap(), br#"{"keys":[]}"#);
        let err = fetch(&url, 4, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
    }
}
