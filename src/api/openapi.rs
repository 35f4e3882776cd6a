//! The OpenAPI 3.1 document of the API, generated from the handlers' `#[utoipa::path]`
//! annotations and the `dto` types; served at `GET /api/calendar/openapi.json` and used to
//! fuzz the API (`scripts/fuzz-api.sh`).
//!
//! Owns: the document's assembly. Must not touch: handlers.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::dto;
use super::errors::ErrorBody;
use super::handlers::{batch, conflicts, connect, feeds, import, preferences, scheduling, status, tasks};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("static API key or HS256 JWT (sub = user_id)".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "calsync compatibility API", description = "The Get It Done! calendar API (seed contract, DESIGN §6)."),
    paths(
        connect::connect,
        connect::google_callback,
        connect::outlook_callback,
        connect::apple_connect,
        tasks::task_to_calendar,
        import::calendar_to_tasks,
        tasks::update_event,
        tasks::delete_event,
        status::connection_status,
        status::disconnect,
        status::sync_history,
        feeds::create,
        feeds::revoke,
        feeds::serve,
        batch::tasks_to_calendar,
        conflicts::list,
        conflicts::resolve,
        preferences::get,
        preferences::put,
        scheduling::suggest_times,
    ),
    components(schemas(ErrorBody, dto::ConnectResponse, dto::OAuthConnectResponse, dto::TaskData, dto::TaskPatch, dto::ImportedTask, dto::OccurrenceException, dto::UpdatedTask, dto::ConnectionInfo, dto::SyncRecord)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The document as generated from the annotations, before `openapi_rules` states the field rules.
pub fn raw_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document served: the generated one with the request field rules (`openapi_rules`).
pub fn document() -> serde_json::Value {
    // Serializing utoipa's own types cannot fail (plain maps, strings and numbers); an empty
    // object would still be served as JSON rather than a panic.
    let mut doc = serde_json::to_value(raw_document()).unwrap_or_default();
    super::openapi_rules::apply(&mut doc);
    doc
}
