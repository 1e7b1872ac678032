//! The S3 test server itself: it serves objects, counts HEADs and GETs exactly, and refuses
//! connections once stopped.

use meridian_tests::s3::{Request, S3Server, http_client};

#[tokio::test]
async fn the_s3_server_counts_each_head_and_get_once_and_refuses_connections_when_stopped() {
    let mut s3 = S3Server::start().await.unwrap();
    s3.create_bucket("artifacts").await.unwrap();
    s3.put("artifacts", "runs/7/out.tar", b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(
        s3.requests().await.unwrap(),
        [],
        "the harness's own calls are not counted"
    );
    assert_eq!(
        s3.get("artifacts", "runs/7/out.tar")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(s3.get("artifacts", "missing").await.unwrap(), None);
    s3.reset_requests().await.unwrap();

    // What the code under test would send: aws-sdk-s3 signs its requests and, path-style,
    // adds `x-id` to GETs.
    let http = http_client();
    let url = format!("{}/artifacts/runs/7/out.tar", s3.endpoint);
    let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/s3/aws4_request, \
                SignedHeaders=host, Signature=0";
    let head = http
        .head(&url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "5");
    let get = http
        .get(format!("{url}?x-id=GetObject"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.bytes().await.unwrap(), &b"hello"[..]);

    assert_eq!(s3.count("HEAD", "runs/7/out.tar").await.unwrap(), 1);
    assert_eq!(s3.count("GET", "runs/7/out.tar").await.unwrap(), 1);
    assert_eq!(s3.count("GET", "out.tar").await.unwrap(), 1);
    assert_eq!(
        s3.count("GET", "t.tar").await.unwrap(),
        0,
        "suffixes match whole segments"
    );
    assert_eq!(
        s3.requests().await.unwrap(),
        [
            Request {
                method: "HEAD".into(),
                path: "/artifacts/runs/7/out.tar".into(),
                query: String::new(),
            },
            Request {
                method: "GET".into(),
                path: "/artifacts/runs/7/out.tar".into(),
                query: "x-id=GetObject".into(),
            },
        ]
    );
    s3.reset_requests().await.unwrap();
    assert_eq!(s3.count("HEAD", "runs/7/out.tar").await.unwrap(), 0);

    s3.stop();
    let err = http.get(&url).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let refused = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
    assert!(refused, "connection refused, not {err:?}");
}
