//! The committed OpenAPI document must be what the code generates: a route,
//! parameter or type changed without regenerating it fails here.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi/hearth.json")
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = hearth_server::openapi_json();
    let path = committed_path();
    if std::env::var_os("HEARTH_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write openapi/hearth.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "its length".to_owned(), |i| format!("line {}", i + 1));
        panic!(
            "openapi/hearth.json differs from the API the code defines (first at {line}).\n\
             If the change is intended, regenerate it and commit the result:\n\
             \n    HEARTH_UPDATE_OPENAPI=1 cargo test -p hearth-server --test openapi_drift\n"
        );
    }
}

#[test]
fn every_route_is_documented_with_its_errors() {
    let doc: serde_json::Value = serde_json::from_str(&hearth_server::openapi_json()).unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    for route in [
        "/healthz",
        "/metrics",
        "/v1/vms",
        "/v1/vms/{id}",
        "/v1/vms/{id}/hold",
        "/v1/vms/{id}/release",
        "/v1/vms/{id}/events",
        "/v1/vms/{id}/console",
        "/v1/vms/{id}/logs/hypervisor",
    ] {
        let ops = paths[route]
            .as_object()
            .unwrap_or_else(|| panic!("{route} missing"));
        for (method, op) in ops {
            if route != "/healthz" {
                assert!(
                    op["security"].is_array(),
                    "{method} {route} has no security"
                );
                assert!(op["responses"]["401"].is_object(), "{method} {route}");
            }
        }
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "CreateVm",
        "Vm",
        "VmEvent",
        "ConsoleTail",
        "ApiError",
        "VmState",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
}

/// utoipa's attributes take literals, so the document repeats the bounds
/// and patterns the validators use: here they must be the same constants.
#[test]
fn the_documents_bounds_and_patterns_are_the_validators() {
    use hearth_types::api::{CreateVm, ExecRequest};
    use hearth_types::guest::GuestFile;
    use hearth_types::limits::*;
    use hearth_types::VmDescription;

    let doc: serde_json::Value = serde_json::from_str(&hearth_server::openapi_json()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let field = |schema: &str, name: &str| schemas[schema]["properties"][name].clone();
    let bounds = |v: serde_json::Value| (v["minimum"].as_u64(), v["maximum"].as_u64());
    let vcpus = u64::from(VmDescription::MAX_VCPUS);
    assert_eq!(bounds(field("CreateVm", "vcpus")), (Some(1), Some(vcpus)));
    let memory = (
        Some(u64::from(VmDescription::MIN_MEMORY_MIB)),
        Some(u64::from(VmDescription::MAX_MEMORY_MIB)),
    );
    assert_eq!(bounds(field("CreateVm", "memory_mib")), memory);
    let readiness = (Some(1), Some(CreateVm::MAX_READINESS_TIMEOUT_SECS));
    assert_eq!(
        bounds(field("CreateVm", "readiness_timeout_secs")),
        readiness
    );
    let exec = (Some(1), Some(ExecRequest::MAX_TIMEOUT_SECS));
    assert_eq!(bounds(field("ExecRequest", "timeout_secs")), exec);
    let mode = field("GuestFile", "mode")["maximum"].as_u64();
    assert_eq!(mode, Some(u64::from(GuestFile::MAX_MODE)));
    let lines = hearth_control::controller::MAX_LINES as u64;
    let console = &doc["paths"]["/v1/vms/{id}/console"]["get"]["parameters"];
    let lines_param = console
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lines");
    assert_eq!(
        lines_param.unwrap()["schema"]["maximum"].as_u64(),
        Some(lines)
    );

    let pattern = |v: &serde_json::Value| v["pattern"].as_str().map(str::to_owned);
    let expect = |got: Option<String>, want: &str, what: &str| {
        assert_eq!(got.as_deref(), Some(want), "the pattern of {what}");
    };
    expect(pattern(&schemas["VmId"]), VM_ID_PATTERN, "VmId");
    expect(pattern(&schemas["TenantId"]), TENANT_PATTERN, "TenantId");
    expect(
        pattern(&field("GuestConfig", "hostname")),
        HOSTNAME_PATTERN,
        "hostname",
    );
    expect(
        pattern(&field("EnvVar", "name")),
        ENV_NAME_PATTERN,
        "EnvVar.name",
    );
    expect(
        pattern(&field("GuestFile", "path")),
        GUEST_FILE_PATTERN,
        "GuestFile.path",
    );
    expect(
        pattern(&field("ServiceSpec", "name")),
        SERVICE_NAME_PATTERN,
        "ServiceSpec.name",
    );
    let param = |path: &str, method: &str, name: &str| {
        let params = doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .clone();
        let p = params.into_iter().find(|p| p["name"] == name);
        p.unwrap_or_else(|| panic!("{method} {path} has no {name}"))["schema"].clone()
    };
    let logs = "/v1/vms/{id}/services/{name}/logs";
    expect(
        pattern(&param(logs, "get", "name")),
        SERVICE_NAME_PATTERN,
        "a service in a URL",
    );
    expect(
        pattern(&param("/v1/tokens/{id}", "delete", "id")),
        TOKEN_ID_PATTERN,
        "a token id",
    );
    let link = "/v1/vms/{id}/viewer-links/{link}";
    expect(
        pattern(&param(link, "delete", "link")),
        VIEWER_LINK_ID_PATTERN,
        "a link id",
    );
    for method in ["get", "put"] {
        let path = param("/v1/vms/{id}/files", method, "path");
        expect(pattern(&path), GUEST_PATH_PATTERN, "a transfer's path");
        assert_eq!(path["minLength"].as_u64(), Some(GUEST_PATH_MIN_LEN as u64));
        assert_eq!(path["maxLength"].as_u64(), Some(GUEST_PATH_MAX_LEN as u64));
    }
}

/// The persistent VM fields' bounds in the document are those the server
/// checks (`hearth_types::persistence`).
#[test]
fn the_persistence_bounds_are_the_validators() {
    use hearth_types::persistence::*;

    let doc: serde_json::Value = serde_json::from_str(&hearth_server::openapi_json()).unwrap();
    let field = |name: &str| doc["components"]["schemas"]["CreateVm"]["properties"][name].clone();
    let bounds = |v: serde_json::Value| (v["minimum"].as_u64(), v["maximum"].as_u64());
    let disk = (Some(u64::from(MIN_DISK_MIB)), Some(u64::from(MAX_DISK_MIB)));
    assert_eq!(bounds(field("disk_mib")), disk);
    let idle = (Some(MIN_IDLE_STOP_SECS), Some(MAX_IDLE_STOP_SECS));
    assert_eq!(bounds(field("idle_stop_secs")), idle);
    let words = doc["components"]["schemas"]["RestartPolicy"]["enum"].clone();
    assert_eq!(words, serde_json::json!(["never", "on-failure", "always"]));
}
