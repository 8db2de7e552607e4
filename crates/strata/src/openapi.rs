//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the types
//! the handlers use (utoipa) and from each resource's spec (its filters and
//! sort fields), so the document cannot drift from the code.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use strata_db::model::{
    Contact, ContactStats, DashboardStats, Deal, DealStage, DealStats, Invoice, InvoiceStats,
    InvoiceStatus, Line, Order, OrderStats, OrderStatus, Role, Task, TaskPriority, TaskStats,
    TaskStatus,
};
use strata_db::repo::{FilterKind, Spec, TAG_FILTER_MAX, TEXT_FILTER_MAX};
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, Required, ResponseBuilder};
use utoipa::OpenApi;

use crate::app::AppState;
use crate::auth::routes::{LoginRequest, LoginResponse, MeResponse};
use crate::auth::{TenantView, UserView};
use crate::http::error::{ErrorBody, ErrorObject, FieldError};
use crate::resources::contacts::ContactInput;
use crate::resources::deals::DealInput;
use crate::resources::invoices::InvoiceInput;
use crate::resources::orders::OrderInput;
use crate::resources::tasks::TaskInput;
use crate::resources::ApiResource;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strata API",
        description = "Multi-tenant business API: contacts, deals, tasks, invoices, orders and a dashboard."
    ),
    components(schemas(
        Contact,
        Deal,
        Task,
        Invoice,
        Order,
        Line,
        DealStage,
        TaskStatus,
        TaskPriority,
        InvoiceStatus,
        OrderStatus,
        Role,
        ContactInput,
        DealInput,
        TaskInput,
        InvoiceInput,
        OrderInput,
        DashboardStats,
        ContactStats,
        DealStats,
        TaskStats,
        InvoiceStats,
        OrderStats,
        LoginRequest,
        LoginResponse,
        MeResponse,
        UserView,
        TenantView,
        ErrorBody,
        ErrorObject,
        FieldError,
    ))
)]
struct Base;

pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(serve))
}

async fn serve() -> impl IntoResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| {
        document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], body.clone())
}

fn json_content(schema: impl Into<RefOr<Schema>>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            json_content(Ref::from_schema_name("ErrorBody")),
        )
        .build()
}

fn ok_response(description: &str, schema: impl Into<RefOr<Schema>>) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", json_content(schema))
        .build()
}

fn empty_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new().description(description).build()
}

fn authenticated(op: OperationBuilder) -> OperationBuilder {
    op.securities(Some([
        SecurityRequirement::new("session", Vec::<String>::new()),
        SecurityRequirement::new("bearer", Vec::<String>::new()),
    ]))
    .response("401", error_response("No valid session"))
    .response(
        "503",
        error_response("A dependency is down; retry after `Retry-After` seconds"),
    )
}

fn query(name: &str, description: &str, schema: impl Into<RefOr<Schema>>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn string_enum(values: impl IntoIterator<Item = String>) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

/// A non-empty string of at most `max` characters.
fn bounded_string(max: usize) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .into()
}

fn uuid_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .into()
}

fn id_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(uuid_schema()))
        .build()
}

/// The list parameters of a resource, read from the same spec the query
/// parser uses.
fn list_parameters(spec: &Spec) -> Vec<Parameter> {
    let integer = |min: i64, max: i64| -> Schema {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(min))
            .maximum(Some(max))
            .into()
    };
    let sorts = spec
        .sorts
        .iter()
        .flat_map(|s| [s.field.to_owned(), format!("-{}", s.field)]);
    let mut params = vec![
        query(
            "page",
            "1-based page number",
            integer(1, i64::from(crate::http::query::MAX_PAGE)),
        ),
        query("per_page", "items per page", integer(1, 100)),
        query(
            "q",
            &format!("case-insensitive search in {}", spec.search.join(", ")),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(crate::http::query::MAX_Q)),
        ),
        query(
            "sort",
            "a field, `-field` for descending; default `-created_at`",
            string_enum(sorts),
        ),
    ];
    for filter in spec.filters {
        let (description, schema): (&str, Schema) = match filter.kind {
            FilterKind::OneOf(_, values) => (
                "equal to",
                string_enum(values.iter().map(|v| (*v).to_owned())),
            ),
            FilterKind::Id(_) => ("refers to this id", uuid_schema()),
            FilterKind::TextCi(_) => ("equal to, ignoring case", bounded_string(TEXT_FILTER_MAX)),
            FilterKind::Tag => ("carries this tag", bounded_string(TAG_FILTER_MAX)),
            FilterKind::Open => (
                "`true`: stage not won or lost",
                ObjectBuilder::new().schema_type(Type::Boolean).into(),
            ),
            FilterKind::Overdue => (
                "`true`: not done and due in the past",
                ObjectBuilder::new().schema_type(Type::Boolean).into(),
            ),
            FilterKind::Before(_) => (
                "earlier than this RFC 3339 timestamp or YYYY-MM-DD date",
                ObjectBuilder::new().schema_type(Type::String).into(),
            ),
        };
        params.push(query(filter.name, description, schema));
    }
    params
}

fn resource_paths<R: ApiResource>(doc: &mut Document) {
    let name = R::SPEC.name;
    let schema = R::name().to_string();
    let input = <R::Input as utoipa::ToSchema>::name().to_string();
    let object = || Ref::from_schema_name(schema.clone());
    let etag_header = utoipa::openapi::header::HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some("hash of the body; send in If-None-Match / If-Match"))
        .build();
    let with_etag = |description: &str| -> utoipa::openapi::Response {
        let mut response = ok_response(description, object());
        response
            .headers
            .insert("ETag".to_owned(), etag_header.clone());
        response
    };
    // Create takes the patch input with its required fields marked so.
    let create_schema = format!("{}Create", R::name());
    if let Some(components) = doc.components.as_mut() {
        if let Some(RefOr::T(Schema::Object(mut object))) = components.schemas.get(&input).cloned()
        {
            object.required = R::REQUIRED.iter().map(|f| (*f).to_owned()).collect();
            components
                .schemas
                .insert(create_schema.clone(), RefOr::T(Schema::Object(object)));
        }
    }
    let request_body = |schema: &str| {
        RequestBodyBuilder::new()
            .required(Some(Required::True))
            .content(
                "application/json",
                json_content(Ref::from_schema_name(schema)),
            )
            .build()
    };
    let create_body = request_body(&create_schema);
    let body = request_body(&input);
    let page = ObjectBuilder::new()
        .property("items", ArrayBuilder::new().items(object()))
        .property(
            "page",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        )
        .property(
            "per_page",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(100)),
        )
        .property(
            "total",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .required("items")
        .required("page")
        .required("per_page")
        .required("total");
    let op = |id: String, summary: String| -> OperationBuilder {
        authenticated(
            OperationBuilder::new()
                .operation_id(Some(id))
                .summary(Some(summary))
                .tag(name),
        )
    };
    let if_match = ParameterBuilder::new()
        .name("If-Match")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(
            "ETag the change is based on; 409 when the object changed since",
        ))
        .build();

    let list: Operation = op(format!("list_{name}"), format!("List {name}"))
        .parameters(Some(list_parameters(&R::SPEC)))
        .response("200", ok_response("One page", page))
        .response("304", empty_response("Not modified (If-None-Match)"))
        .response(
            "400",
            error_response("Unknown or malformed query parameter"),
        )
        .build();
    let create: Operation = op(format!("create_{name}"), format!("Create one of {name}"))
        .request_body(Some(create_body))
        .response("201", with_etag("Created; Location names it"))
        .response("400", error_response("Malformed JSON"))
        .response("409", error_response("Unique number already used"))
        .response("413", error_response("Body too large"))
        .response("415", error_response("Body is not JSON"))
        .response("422", error_response("A field breaks a rule"))
        .response(
            "429",
            error_response("Too many writes from this session; see Retry-After"),
        )
        .build();
    let read: Operation = op(format!("get_{name}"), format!("Get one of {name}"))
        .parameter(id_parameter())
        .response("200", with_etag("The object"))
        .response("304", empty_response("Not modified (If-None-Match)"))
        .response("400", error_response("Malformed id"))
        .response(
            "404",
            error_response("No such object in the caller's tenant"),
        )
        .build();
    let patch: Operation = op(
        format!("update_{name}"),
        format!("Change one of {name}; absent fields are unchanged"),
    )
    .parameter(id_parameter())
    .parameter(if_match.clone())
    .request_body(Some(body))
    .response("200", with_etag("The changed object"))
    .response("400", error_response("Malformed JSON or id"))
    .response(
        "404",
        error_response("No such object in the caller's tenant"),
    )
    .response(
        "409",
        error_response("If-Match is stale, or the number is already used"),
    )
    .response("413", error_response("Body too large"))
    .response("415", error_response("Body is not JSON"))
    .response("422", error_response("A field breaks a rule"))
    .response(
        "429",
        error_response("Too many writes from this session; see Retry-After"),
    )
    .build();
    let delete: Operation = op(format!("delete_{name}"), format!("Delete one of {name}"))
        .parameter(id_parameter())
        .parameter(if_match)
        .response("204", empty_response("Deleted"))
        .response(
            "429",
            error_response("Too many writes from this session; see Retry-After"),
        )
        .response("400", error_response("Malformed id"))
        .response(
            "404",
            error_response("No such object in the caller's tenant"),
        )
        .response(
            "409",
            error_response("Still referenced, or If-Match is stale"),
        )
        .build();
    let collection = format!("/api/{name}");
    let item = format!("/api/{name}/{{id}}");
    doc.paths
        .add_path_operation(&collection, vec![HttpMethod::Get], list);
    doc.paths
        .add_path_operation(&collection, vec![HttpMethod::Post], create);
    doc.paths
        .add_path_operation(&item, vec![HttpMethod::Get], read);
    doc.paths
        .add_path_operation(&item, vec![HttpMethod::Patch], patch);
    doc.paths
        .add_path_operation(&item, vec![HttpMethod::Delete], delete);
}

/// The whole document.
pub fn document() -> Document {
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::auth::COOKIE))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }

    let login = OperationBuilder::new()
        .operation_id(Some("login"))
        .tag("auth")
        .summary(Some(
            "Log in; sets the session cookie and returns a bearer token",
        ))
        .request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    json_content(Ref::from_schema_name("LoginRequest")),
                )
                .build(),
        ))
        .response(
            "200",
            ok_response("Logged in", Ref::from_schema_name("LoginResponse")),
        )
        .response("400", error_response("Malformed JSON"))
        .response("401", error_response("Wrong email or password"))
        .response("413", error_response("Body too large"))
        .response("415", error_response("Body is not JSON"))
        .response("422", error_response("Email or password missing"))
        .response(
            "429",
            error_response("Too many failed logins; see Retry-After"),
        )
        .response(
            "503",
            error_response("Database unavailable, or too many logins at once (`Retry-After`)"),
        )
        .build();
    doc.paths
        .add_path_operation("/api/auth/login", vec![HttpMethod::Post], login);
    let logout = authenticated(
        OperationBuilder::new()
            .operation_id(Some("logout"))
            .tag("auth")
            .summary(Some("Revoke the session")),
    )
    .response("204", empty_response("Logged out"))
    .build();
    doc.paths
        .add_path_operation("/api/auth/logout", vec![HttpMethod::Post], logout);
    let me = authenticated(
        OperationBuilder::new()
            .operation_id(Some("me"))
            .tag("auth")
            .summary(Some("The session's user and tenant")),
    )
    .response(
        "200",
        ok_response("Who is logged in", Ref::from_schema_name("MeResponse")),
    )
    .build();
    doc.paths
        .add_path_operation("/api/auth/me", vec![HttpMethod::Get], me);

    resource_paths::<Contact>(&mut doc);
    resource_paths::<Deal>(&mut doc);
    resource_paths::<Task>(&mut doc);
    resource_paths::<Invoice>(&mut doc);
    resource_paths::<Order>(&mut doc);

    let stats = authenticated(
        OperationBuilder::new()
            .operation_id(Some("dashboard_stats"))
            .tag("dashboard")
            .summary(Some("The tenant's headline figures")),
    )
    .response(
        "200",
        ok_response("Figures", Ref::from_schema_name("DashboardStats")),
    )
    .response("304", empty_response("Not modified (If-None-Match)"))
    .build();
    doc.paths
        .add_path_operation("/api/dashboard/stats", vec![HttpMethod::Get], stats);

    let status = || {
        ObjectBuilder::new()
            .property("status", ObjectBuilder::new().schema_type(Type::String))
            .required("status")
    };
    let healthz = OperationBuilder::new()
        .operation_id(Some("healthz"))
        .tag("ops")
        .summary(Some("Liveness"))
        .response("200", ok_response("Alive", status()))
        .build();
    doc.paths
        .add_path_operation("/healthz", vec![HttpMethod::Get], healthz);
    let readyz = OperationBuilder::new()
        .operation_id(Some("readyz"))
        .tag("ops")
        .summary(Some("Readiness: primary reachable, migrations applied"))
        .response("200", ok_response("Ready", status()))
        .response("503", error_response("Not ready"))
        .build();
    doc.paths
        .add_path_operation("/readyz", vec![HttpMethod::Get], readyz);
    doc
}
