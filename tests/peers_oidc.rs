//! The oidc-provider test peer (`support::oidc`) works end to end, driven with plain reqwest:
//! authorization code + PKCE S256, code exchange with `client_secret_basic`, refresh,
//! introspection, revocation, the user refusing, and Microsoft-like refresh-token rotation. Other
//! tests (calsync's OAuth flows, the fake Google API) rely on exactly these behaviours.

mod support;

use std::time::Duration;

use support::oidc::{GOOGLE_SCOPES, OUTLOOK_SCOPES, OidcOptions, OidcServer, pkce_pair, query_param};

/// Authorizes as alice and returns (code, verifier).
async fn authorize(server: &OidcServer, scope: &str) -> (String, String) {
    let (verifier, challenge) = pkce_pair();
    let url = server.authorization_url(server.client(), scope, "state-1", &challenge, &[]);
    let callback = server.follow_authorization(&url).await;
    let code = query_param(&callback, "code").unwrap_or_else(|| panic!("no code in {callback}"));
    (code, verifier)
}

async fn exchange(server: &OidcServer, code: &str, verifier: &str) -> support::oidc::TokenReply {
    let client = server.client().clone();
    server
        .token_request(
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &client.redirect_uris[0]),
                ("code_verifier", verifier),
            ],
        )
        .await
}

async fn refresh(server: &OidcServer, refresh_token: &str) -> support::oidc::TokenReply {
    let client = server.client().clone();
    server.token_request(&client, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
}

#[tokio::test]
async fn google_like_code_pkce_refresh_introspect_revoke() {
    let server = OidcServer::start(OidcOptions::default());
    let client = server.client().clone();
    let (verifier, challenge) = pkce_pair();
    let url = server.authorization_url(&client, GOOGLE_SCOPES, "state-1", &challenge, &[("prompt", "consent")]);
    let callback = server.follow_authorization(&url).await;
    assert!(callback.starts_with(&format!("{}?", client.redirect_uris[0])), "callback {callback}");
    assert_eq!(query_param(&callback, "state").as_deref(), Some("state-1"));
    assert_eq!(query_param(&callback, "iss").as_deref(), Some(server.issuer()), "RFC 9207 iss");
    let code = query_param(&callback, "code").expect("code");

    let tokens = exchange(&server, &code, &verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.redacted());
    assert_eq!(tokens.body["token_type"], "Bearer");
    let scope = tokens.body["scope"].as_str().expect("scope in the token response");
    assert!(scope.contains("https://www.googleapis.com/auth/calendar.events"), "{scope}");
    let first_access = tokens.access_token().to_string();
    let refresh_token = tokens.refresh_token().to_string();

    // A code works once: the replay is refused and revokes what the code gave (RFC 6749 §4.1.2).
    assert_eq!(exchange(&server, &code, &verifier).await.error(), Some("invalid_grant"));
    assert_eq!(refresh(&server, &refresh_token).await.error(), Some("invalid_grant"));
    let info = server.introspect(&first_access, &client.id, &client.secret).await;
    assert_eq!(info["active"], false, "{info}");

    // Authorize again.
    let (code, verifier) = authorize(&server, GOOGLE_SCOPES).await;
    let tokens = exchange(&server, &code, &verifier).await;
    assert_eq!(tokens.status, 200, "{}", tokens.redacted());
    let refresh_token_2 = tokens.refresh_token().to_string();
    assert_ne!(refresh_token, refresh_token_2);

    let refreshed = refresh(&server, &refresh_token_2).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.redacted());
    assert_ne!(refreshed.access_token(), tokens.access_token(), "a refresh gives a new access token");
    assert_eq!(refreshed.refresh_token(), refresh_token_2, "Google-like: the refresh token stays");

    let info = server.introspect(refreshed.access_token(), &client.id, &client.secret).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], "alice");
    assert_eq!(info["client_id"], client.id.as_str());
    let granted: Vec<&str> = info["scope"].as_str().expect("scope").split(' ').collect();
    assert!(granted.contains(&"https://www.googleapis.com/auth/calendar.events"), "{info}");
    assert!(granted.contains(&"https://www.googleapis.com/auth/calendar.calendarlist.readonly"), "{info}");
    assert!(!granted.contains(&"Calendars.ReadWrite"), "only requested scopes are granted: {info}");

    // Revoking the refresh token ends the grant: no more refreshes, access tokens inactive.
    assert_eq!(server.revoke(&client, &refresh_token_2, Some("refresh_token")).await, 200);
    let after = refresh(&server, &refresh_token_2).await;
    assert_eq!(after.status, 400, "{}", after.redacted());
    assert_eq!(after.error(), Some("invalid_grant"));
    let info = server.introspect(refreshed.access_token(), &client.id, &client.secret).await;
    assert_eq!(info["active"], false, "{info}");
}

#[tokio::test]
async fn wrong_verifier_is_invalid_grant_and_keeps_the_code() {
    let server = OidcServer::start(OidcOptions::default());
    let (code, verifier) = authorize(&server, GOOGLE_SCOPES).await;
    let (other_verifier, _) = pkce_pair();
    let wrong = exchange(&server, &code, &other_verifier).await;
    assert_eq!(wrong.status, 400, "{}", wrong.redacted());
    assert_eq!(wrong.error(), Some("invalid_grant"));
    let right = exchange(&server, &code, &verifier).await;
    assert_eq!(right.status, 200, "the code survives a wrong verifier: {}", right.redacted());
}

#[tokio::test]
async fn pkce_is_required() {
    let server = OidcServer::start(OidcOptions::default());
    let url = server.authorization_url(server.client(), GOOGLE_SCOPES, "s", "", &[]);
    let url = url.replace("code_challenge=&", "").replace("&code_challenge_method=S256", "");
    let callback = server.follow_authorization(&url).await;
    assert_eq!(query_param(&callback, "error").as_deref(), Some("invalid_request"), "{callback}");
    assert_eq!(query_param(&callback, "code"), None);
}

#[tokio::test]
async fn user_saying_no_is_access_denied() {
    let server = OidcServer::start(OidcOptions::default());
    let (_, challenge) = pkce_pair();
    let url = server.authorization_url(server.client(), GOOGLE_SCOPES, "s-9", &challenge, &[("login_hint", "deny")]);
    let callback = server.follow_authorization(&url).await;
    assert_eq!(query_param(&callback, "error").as_deref(), Some("access_denied"), "{callback}");
    assert_eq!(query_param(&callback, "state").as_deref(), Some("s-9"));
    assert_eq!(query_param(&callback, "code"), None);
}

#[tokio::test]
async fn login_hint_picks_the_account() {
    let server = OidcServer::start(OidcOptions::default());
    let tokens = server.issue_tokens(GOOGLE_SCOPES, "bob").await;
    let client = server.client().clone();
    let info = server.introspect(tokens.access_token(), &client.id, &client.secret).await;
    assert_eq!(info["sub"], "bob", "{info}");
}

#[tokio::test]
async fn outlook_like_rotation_reuse_revokes_the_grant() {
    let server = OidcServer::start(OidcOptions { rotate_refresh_tokens: true, ..OidcOptions::default() });
    let client = server.client().clone();
    let tokens = server.issue_tokens(OUTLOOK_SCOPES, "alice").await;
    let info = server.introspect(tokens.access_token(), &client.id, &client.secret).await;
    assert_eq!(info["scope"], "Calendars.ReadWrite", "{info}");

    let first = tokens.refresh_token().to_string();
    let rotated = refresh(&server, &first).await;
    assert_eq!(rotated.status, 200, "{}", rotated.redacted());
    let second = rotated.refresh_token().to_string();
    assert_ne!(first, second, "rotation gives a new refresh token");

    let reuse = refresh(&server, &first).await;
    assert_eq!(reuse.error(), Some("invalid_grant"), "{}", reuse.redacted());
    // Reuse is treated as theft: the whole grant is gone, the rotated token too.
    let after = refresh(&server, &second).await;
    assert_eq!(after.error(), Some("invalid_grant"), "{}", after.redacted());
}

#[tokio::test]
async fn short_ttl_access_tokens_expire() {
    let server = OidcServer::start(OidcOptions { access_token_ttl_secs: 2, ..OidcOptions::default() });
    let client = server.client().clone();
    let tokens = server.issue_tokens(GOOGLE_SCOPES, "alice").await;
    assert_eq!(tokens.body["expires_in"], 2);
    assert_eq!(server.introspect(tokens.access_token(), &client.id, &client.secret).await["active"], true);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let info = server.introspect(tokens.access_token(), &client.id, &client.secret).await;
    assert_eq!(info["active"], false, "{info}");
    let refreshed = refresh(&server, tokens.refresh_token()).await;
    assert_eq!(refreshed.status, 200, "the refresh token outlives the access token: {}", refreshed.redacted());
}

#[tokio::test]
async fn wrong_client_secret_is_invalid_client() {
    let server = OidcServer::start(OidcOptions::default());
    let (code, verifier) = authorize(&server, GOOGLE_SCOPES).await;
    let mut wrong = server.client().clone();
    wrong.secret = "not-the-secret".into();
    let reply = server
        .token_request(
            &wrong,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &wrong.redirect_uris[0]),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.redacted());
    assert_eq!(reply.error(), Some("invalid_client"));
}
