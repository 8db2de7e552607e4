//! The five business resources over one set of generic handlers: list, get,
//! create, patch and delete, with their validation and server-side rules.
//! Each resource module says what its input looks like and which rules it
//! follows; this module says how every resource is served.
//! Never reads the tenant from the request: it comes from the [`Session`].

pub mod contacts;
pub mod deals;
pub mod invoices;
pub mod orders;
pub mod tasks;
pub mod validate;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use strata_db::change::{Image, Token};
use strata_db::model::db_time;
use strata_db::repo::eval::Facts;
use strata_db::repo::{self, ListParams, Resource};
use strata_db::{Db, DbError};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Session;
use crate::cache::live::{self, Record, RowChange};
use crate::cache::{object_params, Loaded, Read, View};
use crate::http::body::InputFields;
use crate::http::etag::{etag, json_with_etag, matches, respond, IfNoneMatch, Tagged};
use crate::http::query::{list_key, parse_list, window_key};
use crate::http::{AppError, FieldError, Id, JsonBody};
pub use validate::Errors;

/// What the HTTP layer needs to serve a stored resource.
pub trait ApiResource: Resource + ToSchema {
    /// The body of create and patch: every field optional, `null` kept
    /// apart from absent.
    type Input: DeserializeOwned + InputFields + ToSchema + Clone + Send + 'static;

    /// Fields a create must set.
    const REQUIRED: &'static [&'static str];

    /// Other resources whose rows a delete of this one changes (foreign
    /// keys `ON DELETE SET NULL`): their cached views are invalidated too.
    const DELETE_CHANGES: &'static [&'static str] = &[];

    /// A new row with every field at its default, before the input applies.
    fn blank(tenant: Uuid, id: Uuid, now: DateTime<Utc>) -> Self;

    /// Copies the fields the input sets; `null` on a field that cannot be
    /// empty is an error.
    fn apply(&mut self, input: Self::Input, errors: &mut Errors);

    /// Sets what the server owns (timestamps of state changes, totals),
    /// given the row as it was (`None` on create).
    fn rules(&mut self, before: Option<&Self>, now: DateTime<Utc>, errors: &mut Errors);

    /// Checks every field rule of the resulting row.
    fn validate(&self, errors: &mut Errors);

    /// The rows this one points at: `(field, table, id)`; each must be in
    /// the caller's tenant.
    fn references(&self) -> Vec<(&'static str, &'static str, Uuid)>;

    /// Sets `updated_at`.
    fn touch(&mut self, at: DateTime<Utc>);
}

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub per_page: u32,
    /// How many rows match in all pages.
    pub total: i64,
}

/// The routes of one resource: `/api/{name}` and `/api/{name}/{id}`.
pub fn routes<R: ApiResource>() -> Router<AppState> {
    let name = R::SPEC.name;
    Router::new()
        .route(&format!("/api/{name}"), get(list::<R>).post(create::<R>))
        .route(
            &format!("/api/{name}/{{id}}"),
            get(read::<R>).patch(patch::<R>).delete(delete::<R>),
        )
}

/// Every resource's routes.
pub fn all_routes() -> Router<AppState> {
    Router::new()
        .merge(routes::<strata_db::model::Contact>())
        .merge(routes::<strata_db::model::Deal>())
        .merge(routes::<strata_db::model::Task>())
        .merge(routes::<strata_db::model::Invoice>())
        .merge(routes::<strata_db::model::Order>())
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, AppError> {
    serde_json::to_vec(value).map_err(|e| AppError::Internal(e.into()))
}

/// Reads one list page of `tenant` as response JSON (what the cache fills).
pub fn load_list<R: ApiResource>(
    tenant: Uuid,
    params: ListParams,
) -> impl FnOnce(Db) -> BoxFuture<'static, Loaded> + Send + 'static {
    move |db: Db| {
        Box::pin(async move {
            let (items, total) = repo::list::<R>(&db, tenant, &params, Utc::now()).await?;
            // Each item is serialised once: as part of the page, and as the
            // object's own response (the same bytes `GET /{name}/{id}` gives).
            let raw = items
                .iter()
                .map(serde_json::value::to_raw_value)
                .collect::<Result<Vec<_>, _>>()?;
            let page = Page {
                items: raw,
                page: params.page,
                per_page: params.per_page,
                total,
            };
            let json = serde_json::to_vec(&page)?;
            let objects = items
                .iter()
                .zip(page.items)
                .map(|(item, raw)| (item.id(), String::from(Box::<str>::from(raw)).into_bytes()))
                .collect();
            Ok(Some(Read::with_objects(json, R::SPEC.name, objects)))
        })
    }
}

/// A page as response bytes, from rows read directly (deep pages of the live store).
pub fn page_json<R: Serialize>(
    items: Vec<R>,
    page: u32,
    per_page: u32,
    total: i64,
) -> Result<Tagged, AppError> {
    let page = Page {
        items,
        page,
        per_page,
        total,
    };
    Ok(Tagged::new(to_json(&page)?))
}

/// Serves one list page of the session's tenant through the cache.
pub async fn cached_list<R: ApiResource>(
    app: &AppState,
    session: &Session,
    params: ListParams,
) -> Result<Tagged, AppError> {
    if let Some(store) = app.cache.live() {
        let reader = session.reader(View::List(R::SPEC.name));
        let key = window_key(&params);
        return store.list::<R>(&session.db(app), reader, params, key).await;
    }
    let key = list_key(&params);
    let load = load_list::<R>(session.tenant_id(), params);
    session
        .read(app, View::List(R::SPEC.name), key, load)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("a list page is never absent")))
}

async fn list<R: ApiResource>(
    State(app): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
    held: IfNoneMatch,
) -> Result<Response, AppError> {
    let params = parse_list(&R::SPEC, raw.as_deref())?;
    let page = cached_list::<R>(&app, &session, params).await?;
    Ok(respond(StatusCode::OK, &page, &held))
}

async fn read<R: ApiResource>(
    State(app): State<AppState>,
    session: Session,
    Id(id): Id,
    held: IfNoneMatch,
) -> Result<Response, AppError> {
    if let Some(store) = app.cache.live() {
        let reader = session.reader(View::object(R::SPEC.name, id));
        let row = store
            .object::<R>(&session.db(&app), reader, id)
            .await?
            .ok_or(AppError::NotFound)?;
        return Ok(respond(StatusCode::OK, &row, &held));
    }
    let tenant = session.tenant_id();
    let load = move |db: Db| async move {
        match repo::get::<R>(&db, tenant, id).await? {
            Some(row) => Ok(Some(serde_json::to_vec(&row)?.into())),
            None => Ok(None),
        }
    };
    let row = session
        .read(
            &app,
            View::object(R::SPEC.name, id),
            object_params(id),
            load,
        )
        .await?
        .ok_or(AppError::NotFound)?;
    Ok(respond(StatusCode::OK, &row, &held))
}

/// The cached views a change of row `id` of `R` affects: its lists, its
/// object, the dashboard, and every list and object of `others`.
fn changed_by<R: ApiResource>(id: Uuid, others: &[&'static str]) -> Vec<View> {
    let mut views = vec![
        View::List(R::SPEC.name),
        View::object(R::SPEC.name, id),
        View::Dashboard,
    ];
    for other in others {
        views.push(View::List(other));
        views.extend(View::all_objects(other));
    }
    views
}

/// The record of a write of row `id` of `R`: its image before (`old`) and after (`new`).
fn record_of<R: ApiResource>(
    session: &Session,
    id: Uuid,
    token: Token,
    old: Option<Image<R>>,
    new: Option<Image<R>>,
) -> Result<Record, AppError> {
    let image = |img: Image<R>| -> Result<(Facts, tiered_cache::Bytes), AppError> {
        let json = to_json(&img.row)?;
        Ok((Facts::of(&img.row, img.lowered), json.into()))
    };
    Ok(Record::Row(Box::new(RowChange {
        tenant: session.tenant_id(),
        slot: live::slot(R::SPEC.name).ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("no live slot for {}", R::SPEC.name))
        })?,
        id,
        token,
        position: session.ctx.last_write().map_or(0, strata_db::Lsn::as_u64),
        at: Utc::now().timestamp_micros(),
        old: old.map(image).transpose()?,
        new: new.map(image).transpose()?,
    })))
}

/// Checks that every id the row points at is a row of the caller's tenant:
/// another tenant's id is as unknown as a missing one (422 on the field).
async fn check_references<R: ApiResource>(
    db: &Db,
    tenant: Uuid,
    row: &R,
    before: Option<&R>,
) -> Result<(), AppError> {
    let unchanged = before.map(|b| b.references()).unwrap_or_default();
    let mut errors = Vec::new();
    for reference in row.references() {
        if unchanged.contains(&reference) {
            continue;
        }
        let (field, table, id) = reference;
        if !repo::exists(db, table, tenant, id).await? {
            errors.push(FieldError::new(field, format!("no such record in {table}")));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::Validation(errors))
    }
}

/// A write refused by a foreign key means a referenced row vanished between
/// the check and the write: the client's reference is the problem.
fn write_error<R: ApiResource>(row: &R) -> impl FnOnce(DbError) -> AppError + '_ {
    move |e| match e {
        DbError::ForeignKey(_) => AppError::Validation(
            row.references()
                .into_iter()
                .map(|(field, ..)| {
                    FieldError::new(field, "may refer to a record that no longer exists")
                })
                .collect(),
        ),
        other => other.into(),
    }
}

async fn create<R: ApiResource>(
    State(app): State<AppState>,
    session: Session,
    JsonBody(input): JsonBody<R::Input>,
) -> Result<Response, AppError> {
    session.admit_write(&app)?;
    let tenant = session.tenant_id();
    let now = db_time(Utc::now());
    let mut row = R::blank(tenant, Uuid::now_v7(), now);
    let mut errors = Errors::default();
    row.apply(input, &mut errors);
    row.rules(None, now, &mut errors);
    row.validate(&mut errors);
    errors.into_result()?;
    let db = session.db(&app);
    check_references(&db, tenant, &row, None).await?;
    let written = repo::insert(&db, tenant, &row)
        .await
        .map_err(write_error(&row))?;
    let bytes = to_json(&row)?;
    // A new row changes lists and totals; no cached object shows it yet.
    let views = [View::List(R::SPEC.name), View::Dashboard];
    if app.cache.live().is_some() {
        let new = Image {
            row: row.clone(),
            lowered: written.lowered,
        };
        let record = record_of::<R>(&session, row.id(), written.token, None, Some(new))?;
        session.changed(&app, &[record], &views).await;
    } else {
        session.wrote(&app, &views).await;
    }
    let mut response = json_with_etag(StatusCode::CREATED, bytes);
    let location = format!("/api/{}/{}", R::SPEC.name, row.id());
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// How often a patch without `If-Match` re-reads and re-applies itself when a
/// concurrent write got in first, before giving up with 409.
const PATCH_ATTEMPTS: usize = 3;

fn stale_if_match() -> AppError {
    AppError::Conflict(
        "the object changed since it was read (If-Match does not match its ETag)".to_owned(),
    )
}

async fn patch<R: ApiResource>(
    State(app): State<AppState>,
    session: Session,
    Id(id): Id,
    headers: HeaderMap,
    JsonBody(input): JsonBody<R::Input>,
) -> Result<Response, AppError> {
    session.admit_write(&app)?;
    let tenant = session.tenant_id();
    let if_match = headers.contains_key(header::IF_MATCH);
    let db = session.db(&app);
    for _ in 0..PATCH_ATTEMPTS {
        // The primary's copy: the version this write replaces.
        let before = repo::get_current::<R>(&db, tenant, id)
            .await?
            .ok_or(AppError::NotFound)?;
        let current = before.row.clone();
        if if_match && !matches(&headers, header::IF_MATCH, &etag(&to_json(&current)?)) {
            return Err(stale_if_match());
        }
        let now = db_time(Utc::now());
        let mut row = current.clone();
        let mut errors = Errors::default();
        row.apply(input.clone(), &mut errors);
        // updated_at only moves forward, even on a clock step back, so it
        // (and the ETag) always tells versions apart.
        row.touch(now.max(current.updated_at() + chrono::Duration::microseconds(1)));
        row.rules(Some(&current), now, &mut errors);
        row.validate(&mut errors);
        errors.into_result()?;
        check_references(&db, tenant, &row, Some(&current)).await?;
        if let Some(written) = repo::update(&db, tenant, &row, current.updated_at())
            .await
            .map_err(write_error(&row))?
        {
            let bytes = to_json(&row)?;
            let views = changed_by::<R>(id, &[]);
            if app.cache.live().is_some() {
                let new = Image {
                    row,
                    lowered: written.lowered,
                };
                let record = record_of::<R>(&session, id, written.token, Some(before), Some(new))?;
                session.changed(&app, &[record], &views).await;
            } else {
                session.wrote(&app, &views).await;
            }
            return Ok(json_with_etag(StatusCode::OK, bytes));
        }
        if if_match {
            return Err(stale_if_match());
        }
    }
    Err(AppError::Conflict(
        "the object is being changed concurrently; retry".to_owned(),
    ))
}

async fn delete<R: ApiResource>(
    State(app): State<AppState>,
    session: Session,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    session.admit_write(&app)?;
    let tenant = session.tenant_id();
    let db = session.db(&app);
    if headers.contains_key(header::IF_MATCH) {
        let current = repo::get_current::<R>(&db, tenant, id)
            .await?
            .ok_or(AppError::NotFound)?
            .row;
        if !matches(&headers, header::IF_MATCH, &etag(&to_json(&current)?)) {
            return Err(stale_if_match());
        }
    }
    match repo::delete::<R>(&db, tenant, id).await {
        Ok(Some((old, token))) => {
            let views = changed_by::<R>(id, R::DELETE_CHANGES);
            if app.cache.live().is_some() {
                let mut records = vec![record_of::<R>(&session, id, token, Some(old), None)?];
                if !R::DELETE_CHANGES.is_empty() {
                    // `SET NULL` changed rows of these resources that no record names.
                    records.push(Record::Drop {
                        tenant,
                        slots: R::DELETE_CHANGES
                            .iter()
                            .filter_map(|r| live::slot(r))
                            .collect(),
                        position: session.ctx.last_write().map_or(0, strata_db::Lsn::as_u64),
                        at: Utc::now().timestamp_micros(),
                    });
                }
                session.changed(&app, &records, &views).await;
            } else {
                session.wrote(&app, &views).await;
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Ok(None) => Err(AppError::NotFound),
        Err(DbError::ForeignKey(_)) => Err(AppError::Conflict(format!(
            "this {} is still referenced (e.g. by invoices); delete or reassign those first",
            R::SPEC.name.trim_end_matches('s')
        ))),
        Err(e) => Err(e.into()),
    }
}
