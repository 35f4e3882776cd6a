use serde_json::json;

use super::*;

fn req(method: Method, path: &str, if_match: Option<&str>, body: Option<serde_json::Value>) -> GRequest {
    let url = Url::parse(&format!("https://www.googleapis.com{path}")).unwrap();
    GRequest::new(method, &url, if_match, body.as_ref()).unwrap()
}

#[test]
fn requests_are_encoded_as_http_parts_with_path_only() {
    let reqs = [
        req(Method::POST, "/calendar/v3/calendars/primary/events", None, Some(json!({"id": "abc"}))),
        req(Method::DELETE, "/calendar/v3/calendars/a%40b/events/x?sendUpdates=none", Some("\"3\""), None),
    ];
    let text = String::from_utf8(encode(&reqs, "BB")).unwrap();
    let body = r#"{"id":"abc"}"#;
    let expected = format!(
        "--BB\r\nContent-Type: application/http\r\nContent-ID: <item-0>\r\n\r\nPOST /calendar/v3/calendars/primary/events HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\r\n\
         --BB\r\nContent-Type: application/http\r\nContent-ID: <item-1>\r\n\r\nDELETE /calendar/v3/calendars/a%40b/events/x?sendUpdates=none HTTP/1.1\r\nIf-Match: \"3\"\r\n\r\n\r\n\
         --BB--\r\n",
        body.len()
    );
    assert_eq!(text, expected);
}

#[test]
fn etags_that_cannot_be_headers_are_refused_before_sending() {
    let url = Url::parse("https://x.example/calendar/v3/calendars/p/events/e").unwrap();
    assert!(matches!(GRequest::new(Method::PATCH, &url, Some("a\r\nX: y"), None), Err(ProviderError::Invalid { .. })));
}

fn answer(parts: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::from("preamble ignored\r\n");
    for (id, http) in parts {
        s.push_str(&format!("--batch_x\r\nContent-Type: application/http\r\nContent-ID: <{id}>\r\n\r\n{http}\r\n"));
    }
    s.push_str("--batch_x--\r\n");
    s.into_bytes()
}

const CT: &str = "multipart/mixed; boundary=batch_x";

#[test]
fn answers_are_matched_by_content_id_with_status_headers_and_body() {
    let body = answer(&[
        (
            "response-item-1",
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"error\":{\"code\":404}}",
        ),
        ("response-item-0", "HTTP/1.1 200 OK\r\nETag: \"7\"\r\nContent-Length: 11\r\n\r\n{\"id\":\"a\"}\n"),
        ("response-item-2", "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 9\r\n\r\n"),
    ]);
    let out = decode(CT, &body, 3).unwrap();
    let r0 = out[0].as_ref().unwrap();
    assert_eq!(r0.status, StatusCode::OK);
    assert_eq!(r0.headers.get("etag").unwrap(), "\"7\"");
    assert_eq!(r0.body, b"{\"id\":\"a\"}\n");
    assert_eq!(out[1].as_ref().unwrap().status, StatusCode::NOT_FOUND);
    let r2 = out[2].as_ref().unwrap();
    assert_eq!(r2.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(matches!(
        classify(r2, "testing"),
        ProviderError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 9
    ));
}

#[test]
fn bare_line_feeds_quoted_boundaries_and_missing_content_ids_are_read() {
    let body = "--b\nContent-Type: application/http\n\nHTTP/1.1 204 No Content\n\n\n--b\nContent-Type: application/http\n\nHTTP/1.1 200 OK\n\n{}\n--b--\n";
    let out = decode("multipart/mixed; charset=x; boundary=\"b\"", body.as_bytes(), 2).unwrap();
    assert_eq!(out[0].as_ref().unwrap().status, StatusCode::NO_CONTENT);
    assert_eq!(out[1].as_ref().unwrap().body, b"{}");
}

#[test]
fn a_request_without_an_answer_gets_a_retryable_error() {
    let body = answer(&[("response-item-0", "HTTP/1.1 200 OK\r\n\r\n{}")]);
    let out = decode(CT, &body, 2).unwrap();
    assert!(out[0].is_ok());
    assert!(matches!(&out[1], Err(ProviderError::Transient { .. })));
}

#[test]
fn malformed_answers_are_errors_never_panics() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"{}".to_vec()),
        ("multipart/mixed", b"--x\r\n".to_vec()),
        (CT, b"".to_vec()),
        (CT, b"--batch_x\r\nno blank line".to_vec()),
        (CT, b"--batch_x\r\nContent-Type: application/http\r\n\r\nnot a status line\r\n--batch_x--".to_vec()),
        (CT, answer(&[("response-item-0", "HTTP/1.1 200 OK\r\n\r\n{}")])[..40].to_vec()),
        (CT, answer(&[("response-item-7", "HTTP/1.1 200 OK\r\n\r\n{}")])),
        (CT, answer(&[("response-item-0", "HTTP/1.1 200 OK\r\n\r\n"), ("response-item-0", "HTTP/1.1 200 OK\r\n\r\n")])),
        (CT, answer(&[("response-item-0", "HTTP/1.1 999999 OK\r\n\r\n")])),
        (CT, vec![0xff, 0xfe, b'\n', b'-', b'-']),
    ];
    for (i, (ct, body)) in cases.into_iter().enumerate() {
        assert!(decode(ct, &body, 1).is_err(), "case {i} should be refused");
    }
    // Arbitrary bytes: any answer, no panic.
    for n in 0..200u32 {
        let junk: Vec<u8> =
            (0..n).map(|i| b"--batch_x\r\n:HTTP/1.1 2 \n"[(i as usize * 7 + n as usize) % 23]).collect();
        let _ = decode(CT, &junk, 3);
    }
}

#[test]
fn boundaries_are_read_from_the_content_type() {
    assert_eq!(boundary_of("multipart/mixed; boundary=abc").as_deref(), Some("abc"));
    assert_eq!(boundary_of("Multipart/Mixed;boundary=\"a b\"").as_deref(), Some("a b"));
    assert_eq!(boundary_of("multipart/mixed"), None);
    assert_eq!(boundary_of("text/html; boundary=x"), None);
    assert_eq!(boundary_of("multipart/mixed; boundary="), None);
}
