//! Reading a request body with a cap: a declared length over the cap is refused before a byte
//! is read, and a body that grows past it (chunked) is cut off when it does.

use axum::body::{Body, Bytes};
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than the {limit} bytes accepted")]
    TooLarge { limit: usize },
    #[error("reading the request body: {0}")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The whole body of a request whose headers are `headers`, at most `limit` bytes.
pub async fn read_limited(
    headers: &axum::http::HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BodyError::TooLarge { limit })
        }
        Err(e) => Err(BodyError::Read(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[tokio::test]
    async fn caps_declared_and_actual_length() {
        let mut declared = HeaderMap::new();
        declared.insert(
            axum::http::header::CONTENT_LENGTH,
            "11".parse().expect("header"),
        );
        assert!(matches!(
            read_limited(&declared, Body::from("x"), 10).await,
            Err(BodyError::TooLarge { limit: 10 })
        ));
        assert!(matches!(
            read_limited(&HeaderMap::new(), Body::from("0123456789a"), 10).await,
            Err(BodyError::TooLarge { limit: 10 })
        ));
        let read = read_limited(&HeaderMap::new(), Body::from("0123456789"), 10)
            .await
            .expect("ten bytes fit");
        assert_eq!(&read[..], b"0123456789");
    }
}
