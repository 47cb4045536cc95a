//! `/v1/vms/{id}/diagnosis`: why a VM failed, in plain words, from its
//! logs and its recorded failure — the same answer while it runs and after
//! it is destroyed (its logs are archived).

use axum::extract::State;
use axum::Json;
use hearth_types::api::{ApiError, Diagnosis};
use hearth_types::VmId;

use crate::error::Problem;
use crate::extract::{Caller, VmPath};
use crate::AppState;

/// Why the VM failed, in plain words, from its logs and recorded failure.
///
/// Each finding names a rule (`kernel_panic`, `out_of_memory`,
/// `failed_unit`, ...), the cause, the console or log lines that show it,
/// and the fix; the most likely cause comes first. A healthy VM has no
/// findings. Destroyed VMs are diagnosed from their archived logs.
/// `docs/diagnosis.md` lists the rules.
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/diagnosis",
    operation_id = "vm_diagnosis",
    tag = "vms",
    params(("id" = VmId, Path, description = "The VM's id")),
    responses(
        (status = 200, description = "The findings, most likely cause first; none for a healthy VM", body = Diagnosis),
        (status = 400, description = "`invalid_id`", body = ApiError),
        (status = 401, description = "`unauthorized`", body = ApiError),
        (status = 404, description = "`not_found`", body = ApiError),
        (status = 429, description = "`rate_limited`", body = ApiError),
    ),
    security(("token" = []))
)]
pub(crate) async fn diagnosis(
    State(state): State<AppState>,
    Caller(scope): Caller,
    VmPath(id): VmPath,
) -> Result<Json<Diagnosis>, Problem> {
    Ok(Json(state.controller.diagnosis(&scope, &id).await?))
}
