//! The OpenAPI document's frame, and the error answers that layers give, not handlers.
//!
//! Handlers describe their own answers (`#[utoipa::path(responses(...))]`). The answers of the
//! layers around them — tokens, the loopback `Host` check, the JSON-only body rule, the body
//! size and time limits, the parsing of path and query — are added here to every operation
//! they can reach, from what the operation declares (security, a body, parameters), so a new
//! route is documented with them without repeating them.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response, ResponseBuilder};

use super::problem;

/// The document's frame: title, version, the bearer scheme and the error schema.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "herald",
        description = "Reliable outbound callbacks: the producer API (`/v1`) and the admin API (`/admin`). \
            Producer and admin routes take `Authorization: Bearer <token>` (the scheme in any case). \
            Every error is `application/problem+json` with a stable `type`. Request bodies must be \
            `application/json` (415 otherwise). A method that a path does not serve is a 405 \
            `method_not_allowed` with an `Allow` header (components/responses/MethodNotAllowed). \
            Without tokens, requests whose `Host` is not a loopback address or `localhost` are \
            refused with 421 `misdirected_request`."
    ),
    modifiers(&BearerAuth),
    components(schemas(problem::Problem)),
    tags(
        (name = "producer", description = "send and read messages (producer or admin token)"),
        (name = "admin", description = "endpoints, deliveries, replay, policies (admin token)"),
        (name = "ops", description = "liveness, metrics and this document (no token)")
    )
)]
pub(super) struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// (status, component name, description) of every answer a layer may give.
const LAYER_RESPONSES: &[(&str, &str, &str)] = &[
    (
        "400",
        "InvalidRequest",
        "invalid_request: the body, a query parameter or a value is malformed or out of range",
    ),
    (
        "401",
        "Unauthorized",
        "unauthorized: no valid `Authorization: Bearer <token>`",
    ),
    (
        "403",
        "Forbidden",
        "forbidden: the producer token may only send and read messages",
    ),
    (
        "404",
        "NotFound",
        "not_found: no such id (an id that does not parse or decode is not found either)",
    ),
    (
        "405",
        "MethodNotAllowed",
        "method_not_allowed: the path does not serve this method; `Allow` lists those it does",
    ),
    (
        "408",
        "RequestTimeout",
        "request_timeout: the body did not arrive within `body_read_timeout`; the connection is closed",
    ),
    (
        "413",
        "PayloadTooLarge",
        "payload_too_large: the body is over the server's limit (with `limit`)",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "unsupported_media_type: a request body must be `application/json`",
    ),
    (
        "421",
        "MisdirectedRequest",
        "misdirected_request: without tokens, `Host` must be a loopback address or `localhost`",
    ),
];

/// `doc` with [`LAYER_RESPONSES`] as reusable responses and referenced from every operation
/// that can meet them (an answer the handler already describes is kept as it is).
pub(super) fn with_layer_responses(mut doc: OpenApi) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    for (_, name, description) in LAYER_RESPONSES {
        let problem = Content::new(Some(Ref::from_schema_name("Problem")));
        let response: Response = ResponseBuilder::new()
            .description(*description)
            .content("application/problem+json", problem)
            .build();
        components
            .responses
            .insert((*name).to_string(), RefOr::T(response));
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let admin = path.starts_with("/admin");
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            for status in layer_statuses(operation, admin) {
                let Some((_, name, _)) = LAYER_RESPONSES.iter().find(|(s, _, _)| *s == status)
                else {
                    continue;
                };
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
            }
        }
    }
    doc
}

/// The layers' answers `operation` can meet.
fn layer_statuses(operation: &Operation, admin: bool) -> Vec<&'static str> {
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let parameters_in = |place: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|parameter| matches!(parameter, RefOr::T(p) if p.parameter_in == place))
    };
    let mut statuses = vec!["421"];
    if secured {
        statuses.push("401");
    }
    if secured && admin {
        statuses.push("403");
    }
    if parameters_in(ParameterIn::Path) {
        statuses.push("404");
    }
    if parameters_in(ParameterIn::Query) {
        statuses.push("400");
    }
    if operation.request_body.is_some() {
        statuses.extend(["400", "408", "413", "415"]);
    }
    statuses
}
