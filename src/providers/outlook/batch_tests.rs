use super::*;

fn base() -> Url {
    Url::parse("https://graph.example.com/v1.0").unwrap()
}

fn req(method: Method, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> GraphRequest {
    let url = Url::parse(&format!("https://graph.example.com/v1.0{path}")).unwrap();
    GraphRequest::new(method, &url, headers, body.as_ref())
}

#[test]
fn requests_are_encoded_relative_to_the_version_root() {
    let reqs = [
        req(
            Method::POST,
            "/me/calendars/AAM%3D/events",
            &[("Prefer", "outlook.timezone=\"UTC\"")],
            Some(json!({"subject": "a"})),
        ),
        req(Method::DELETE, "/me/events/x", &[("if-match", "W/\"1\"")], None),
        req(Method::GET, "/me/events/y?$expand=a%20b", &[], None),
    ];
    let v = encode(&base(), &reqs).unwrap();
    assert_eq!(
        v,
        json!({"requests": [
            {"id": "0", "method": "POST", "url": "/me/calendars/AAM%3D/events",
             "headers": {"prefer": "outlook.timezone=\"UTC\"", "content-type": "application/json"},
             "body": {"subject": "a"}},
            {"id": "1", "method": "DELETE", "url": "/me/events/x", "headers": {"if-match": "W/\"1\""}},
            {"id": "2", "method": "GET", "url": "/me/events/y?$expand=a%20b"},
        ]})
    );
    let elsewhere = GraphRequest::new(Method::GET, &Url::parse("https://evil.example.com/v1.0/me").unwrap(), &[], None);
    assert!(encode(&base(), &[elsewhere]).is_none());
    assert_eq!(relative(&base(), &Url::parse("https://graph.example.com/v1.0x/me").unwrap()), None);
}

#[test]
fn answers_in_any_order_are_matched_by_id() {
    let body = json!({"responses": [
        {"id": "2", "status": 429, "headers": {"Retry-After": "7"}, "body": {"error": {"code": "TooManyRequests", "message": "m"}}},
        {"id": "0", "status": 201, "headers": {"Content-Type": "application/json"}, "body": {"id": "E1"}},
        {"id": "1", "status": 204, "body": null},
    ]});
    let out = decode(&serde_json::to_vec(&body).unwrap(), 3).unwrap();
    let r0 = out[0].as_ref().unwrap();
    assert_eq!(r0.status, StatusCode::CREATED);
    assert_eq!(serde_json::from_slice::<Value>(&r0.body).unwrap(), json!({"id": "E1"}));
    assert_eq!(out[1].as_ref().unwrap().status, StatusCode::NO_CONTENT);
    assert!(out[1].as_ref().unwrap().body.is_empty());
    assert!(matches!(
        classify(out[2].as_ref().unwrap(), "testing"),
        ProviderError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 7
    ));
}

#[test]
fn base64_bodies_and_missing_answers() {
    let body = json!({"responses": [
        {"id": "0", "status": 200, "headers": {"content-type": "text/plain"}, "body": "aGVsbG8="},
    ]});
    let out = decode(&serde_json::to_vec(&body).unwrap(), 2).unwrap();
    assert_eq!(out[0].as_ref().unwrap().body, b"hello");
    assert!(matches!(&out[1], Err(ProviderError::Transient { .. })));
}

#[test]
fn malformed_answers_are_errors_never_panics() {
    let cases = [
        "",
        "<html>",
        "{}",
        r#"{"responses": {}}"#,
        r#"{"responses": [{"id": "x", "status": 200}]}"#,
        r#"{"responses": [{"id": "5", "status": 200}]}"#,
        r#"{"responses": [{"id": "0", "status": 200}, {"id": "0", "status": 200}]}"#,
        r#"{"responses": [{"id": "0", "status": 99999}]}"#,
        r#"{"responses": [{"id": "0"}]}"#,
    ];
    for c in cases {
        assert!(decode(c.as_bytes(), 1).is_err(), "{c} should be refused");
    }
}
